"""Golden test: a paper table built from hand-made records and reported rows."""

from __future__ import annotations

import math

import pytest
from results_factories import make_record, reported_frame, reported_row, write_records, write_reported_csv

from uss_bench.cli import main
from uss_bench.results.export import records_frame
from uss_bench.results.reproduced import aggregate
from uss_bench.results.tables import build_cells, parse_layout, render_table

LAYOUT = parse_layout({
    "name": "demo-t1", "paper": "ppap2024", "table": "t1", "caption": "Demo table", "source": "test",
    "dataset": "cocostuff27", "protocol": "ppap", "crf": True,
    "columns": [{"metric": "cluster.acc", "label": "Acc"}, {"metric": "cluster.miou", "label": "mIoU"}],
    "rows": [{"method": "hp", "backbone": "vit-s8", "label": "HP"},
             {"method": "stego", "backbone": "vit-s8", "label": "STEGO"},
             {"method": "transfgu", "backbone": "vit-s8", "label": "TransFGU"}],
}, "test")

REPORTED = reported_frame([
    reported_row(method="hp", metric="cluster.acc", value=57.2),
    reported_row(method="hp", metric="cluster.miou", value=float("nan"), note="UNKNOWN: garbled"),
    reported_row(method="stego", metric="cluster.acc", value=48.3),
    reported_row(method="transfgu", metric="cluster.acc", value=52.7),
    reported_row(method="transfgu", metric="cluster.miou", value=17.5),
])


def hp_records():
    # CRF values over seeds: acc 56, 57, 58 -> mean 57.0, std 1.0, delta -0.2; miou 24, 25, 26 -> 25.0 ± 1.0
    recs = []
    for seed, acc, miou in [(0, 56.0, 24.0), (1, 57.0, 25.0), (2, 58.0, 26.0)]:
        recs.append(make_record(f"hp{seed}", seed=seed, metrics={
            "cluster": {"acc": acc - 5, "miou": miou - 5},          # without CRF: must not be used (paper: CRF on)
            "cluster_crf": {"acc": acc, "miou": miou}}))
    recs.append(make_record("hp-other-protocol", protocol="hp", metrics={"cluster_crf": {"acc": 99.0}}))
    recs.append(make_record("hp-failed", status="failed", metrics={"cluster_crf": {"acc": 1.0}}))
    recs.append(make_record("hp-random", random_init=True, metrics={"cluster_crf": {"acc": 2.0}}))
    return recs


def test_cells_hold_hand_worked_values():
    cells = build_cells(LAYOUT, REPORTED, aggregate(records_frame(hp_records())))
    hp_acc = cells[(cells["method"] == "hp") & (cells["column"] == "Acc")].iloc[0]
    assert (hp_acc["reported"], hp_acc["mean"], hp_acc["std"], hp_acc["n"]) == (57.2, 57.0, 1.0, 3)
    assert hp_acc["delta"] == pytest.approx(-0.2)
    hp_miou = cells[(cells["method"] == "hp") & (cells["column"] == "mIoU")].iloc[0]
    assert hp_miou["reported_state"] == "unknown" and hp_miou["mean"] == 25.0 and math.isnan(hp_miou["delta"])
    assert list(cells.groupby("row")["row_status"].first()) == ["", "not run", "reported only"]


GOLDEN_MD = """\
**demo-t1**: Demo table

| Method   | Backbone   | Acc                            | mIoU                 | Status        |
|----------|------------|--------------------------------|----------------------|---------------|
| HP       | vit-s8     | 57.2 / 57.0 ± 1.0 (n=3) / -0.2 | ? / 25.0 ± 1.0 (n=3) |               |
| STEGO    | vit-s8     | 48.3                           | –                    | not run       |
| TransFGU | vit-s8     | 52.7                           | 17.5                 | reported only |

- Demo table [Seong et al., ECCV 2024, Table 1 (arXiv:2407.12463), test]
- Cell: reported / reproduced mean ± std (n seeds) / signed delta (reproduced − reported); ? = reported value \
unreadable in the source (recorded as unknown); – = not reported by the paper.
- 'reported only': uss-bench cannot run this row; 'not run': runnable, no completed records.
"""


def test_markdown_golden():
    cells = build_cells(LAYOUT, REPORTED, aggregate(records_frame(hp_records())))
    assert render_table(LAYOUT, cells, "md") == GOLDEN_MD


def test_csv_and_latex_formats():
    cells = build_cells(LAYOUT, REPORTED, aggregate(records_frame(hp_records())))
    csv_text = render_table(LAYOUT, cells, "csv")
    assert csv_text.splitlines()[1].startswith("HP,hp,,vit-s8,Acc,cocostuff27,cluster.acc,ppap,true,57.2,value,")
    latex = render_table(LAYOUT, cells, "latex")
    assert r"57.2 / 57.0 $\pm$ 1.0 (n=3) / -0.2" in latex and latex.startswith("\\begin{table}")
    with pytest.raises(ValueError, match="unknown table format"):
        render_table(LAYOUT, cells, "html")


def test_any_protocol_picks_up_other_protocols_only_when_asked():
    recs = [make_record("s0", method="stego", protocol="stego", metrics={"cluster_crf": {"acc": 47.3}})]
    agg = aggregate(records_frame(recs))
    strict = build_cells(LAYOUT, REPORTED, agg)
    loose = build_cells(LAYOUT, REPORTED, agg, any_protocol=True)
    pick = (strict["method"] == "stego") & (strict["column"] == "Acc")
    assert strict[pick].iloc[0]["n"] == 0
    assert loose[pick].iloc[0]["delta"] == pytest.approx(-1.0)


def test_table_command_on_a_synthetic_sweep(tmp_path, capsys):
    results = write_records(tmp_path / "res", hp_records())
    reported = write_reported_csv(tmp_path / "reported", [reported_row(method="hp", metric="cluster.acc", value=57.2)])
    assert main(["table", "ppap-t1", "--results", str(results), "--reported", str(reported)]) == 0
    out = capsys.readouterr().out
    assert "| HP       | vit-s8       | 57.2 / 57.0 ± 1.0 (n=3) / -0.2" in out
    assert main(["table", "no-such-table", "--results", str(results)]) == 2
    assert "unknown table 'no-such-table'" in capsys.readouterr().err


def test_every_shipped_table_regenerates(capsys):
    from uss_bench.registry import TABLES

    for name in TABLES.names():
        for fmt in ("md", "latex", "csv"):
            assert main(["table", name, "--format", fmt, "--results", "/nonexistent-results-dir"]) == 0, name
    assert "PPAP Table 1" in capsys.readouterr().out
