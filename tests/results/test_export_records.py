"""Tidy export of run records (CSV / parquet)."""

from __future__ import annotations

import pandas as pd
import pytest
from results_factories import make_record, write_records

from uss_bench.results.export import export_records, read_export, records_frame


def sample_records():
    ok = make_record("a1", steps=0, metrics={
        "cluster": {"acc": 57.1, "miou": 24.3, "iou": {"sky": 80.0, "wall": 20.5}, "mapping": [1, 0]},
        "cluster_crf": {"acc": 58.0}, "knn": {"acc": 70.0, "n_pixels": 1234},
        "nfcovering": {"3": 41.0}})
    failed = make_record("b2", status="failed")
    failed["error"] = {"type": "RuntimeError", "message": "boom"}
    return [ok, failed]


def test_records_frame_flattens_sections_and_splits_crf():
    frame = records_frame(sample_records())
    ok = frame[frame["run_id"] == "a1"].set_index(["metric", "crf"])["value"]
    assert ok[("cluster.acc", False)] == 57.1
    assert ok[("cluster.acc", True)] == 58.0
    assert ok[("cluster.iou.wall", False)] == 20.5
    assert ok[("knn.n_pixels", False)] == 1234.0
    assert ok[("nfcovering.3", False)] == 41.0
    assert not frame["metric"].astype(str).str.contains("mapping").any()   # lists are not metrics
    assert len(ok) == 8
    row = frame[frame["run_id"] == "a1"].iloc[0]
    assert (row["method"], row["protocol"], row["checkpoint"], row["train_steps"]) == ("hp", "ppap", True, 0)
    failed = frame[frame["run_id"] == "b2"]
    assert len(failed) == 1 and failed.iloc[0]["status"] == "failed" and pd.isna(failed.iloc[0]["metric"])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trip(tmp_path, fmt):
    results = write_records(tmp_path / "res", sample_records())
    out = export_records(results, tmp_path / f"all.{fmt}", fmt)
    back = read_export(out)
    assert len(back) == len(records_frame(sample_records())) == 9
    assert back[(back["metric"] == "cluster.iou.sky")]["value"].tolist() == [80.0]


def test_export_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'xlsx'"):
        export_records(tmp_path, tmp_path / "x.xlsx", "xlsx")
    with pytest.raises(FileNotFoundError, match="no saved results file"):
        read_export(tmp_path / "nope.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a uss-bench export"):
        read_export(tmp_path / "other.csv")
