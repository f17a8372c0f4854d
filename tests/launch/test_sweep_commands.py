"""`uss-bench status` and `uss-bench collect` on a hand-made sweep (no scheduler involved)."""

import sys
import types
from pathlib import Path

import pytest

from uss_bench.cli import main
from uss_bench.launch import manifest as mf
from uss_bench.results.records import write_record


@pytest.fixture
def sweep(tmp_path: Path) -> dict:
    m = mf.new_manifest(tmp_path, "local", None)
    for i, status in enumerate(["completed", "failed", None]):
        spec = {"method": "dino", "dataset": "synthetic", "backbone": "vit-s8", "seed": i}
        mf.add_run(m, spec, f"run{i}", str(10_000_000 + i), {})  # pids that do not exist
        if status:
            write_record(tmp_path, {"run_id": f"run{i}", "status": status, "spec": spec,
                                    "metrics": {"cluster": {"acc": 50.0 + i, "miou": 20.0}},
                                    "error": {"type": "RuntimeError", "message": "nan loss"}})
    mf.save(m)
    return m


def test_status_refreshes_and_prints_states(sweep: dict, tmp_path: Path, capsys):
    assert main(["status", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert sweep["sweep_id"] in out
    assert "1 completed, 2 failed" in out  # run2's process is gone without a record: failed
    saved = mf.find(tmp_path)
    assert [r["state"] for r in saved["runs"]] == ["completed", "failed", "failed"]
    assert saved["runs"][1]["error"] == "RuntimeError: nan loss"
    assert "no longer known" in saved["runs"][2]["error"]
    assert main(["status", "--errors", "--no-refresh", "--results", str(tmp_path)]) == 0
    assert "--- run1" in capsys.readouterr().out


def test_status_of_unknown_sweep(tmp_path: Path, capsys):
    assert main(["status", "nope", "--results", str(tmp_path)]) == 2
    assert "no sweep 'nope'" in capsys.readouterr().err
    (tmp_path / "sweeps").mkdir()
    assert main(["status", "nope", "--results", str(tmp_path)]) == 2
    assert "no sweep 'nope'" in capsys.readouterr().err


def test_collect_prints_finished_records(sweep: dict, tmp_path: Path, capsys):
    assert main(["collect", sweep["sweep_id"], "--results", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    # run2 died without a result: collect marks it failed and writes a failed record for it
    assert "3 record(s) collected (1 completed, 2 failed); 0 run(s) not finished" in captured.err
    assert "| dino" in captured.out


def test_collect_exports_through_results_export(sweep: dict, tmp_path: Path, monkeypatch):
    calls = []
    fake = types.ModuleType("uss_bench.results.export")
    fake.export_records = lambda results_dir, out, fmt: calls.append((results_dir, out, fmt))
    monkeypatch.setitem(sys.modules, "uss_bench.results.export", fake)
    assert main(["collect", "--results", str(tmp_path), "--format", "csv", "--out", str(tmp_path / "x.csv")]) == 0
    assert calls == [(tmp_path.resolve(), tmp_path / "x.csv", "csv")]


def test_collect_export_without_the_export_module_is_a_clear_error(sweep: dict, tmp_path: Path, monkeypatch,
                                                                   capsys):
    monkeypatch.setitem(sys.modules, "uss_bench.results.export", None)  # import raises ImportError
    assert main(["collect", "--results", str(tmp_path), "--format", "parquet"]) == 2
    assert "--format needs uss_bench.results.export.export_records" in capsys.readouterr().err


def test_collect_runs_the_deferred_crf_stage(sweep: dict, tmp_path: Path, capsys):
    import numpy as np

    from uss_bench.eval.crf_kernel import CRFParams
    from uss_bench.launch import crf_stage
    from uss_bench.results.records import load_record

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (2, 8, 8))
    writer = crf_stage.LogitsWriter(crf_stage.logits_dir(tmp_path, "run0"), {
        "crf_params": CRFParams().as_dict(), "class_names": ["a", "b"], "matching": "hungarian",
        "miou_averaging": "skip_absent"})
    writer(rng.integers(0, 255, (2, 3, 8, 8)).astype(np.uint8), rng.normal(size=(2, 2, 8, 8)),
           rng.normal(size=(2, 2, 8, 8)), labels)
    writer.close()
    assert main(["collect", "--results", str(tmp_path), "--crf-stage", "inline"]) == 0
    assert "CRF stage: 1 run(s)" in capsys.readouterr().err
    metrics = load_record(tmp_path, "run0")["metrics"]
    assert metrics["cluster_crf"]["n_pixels"] == metrics["linear_crf"]["n_pixels"] == 128
    assert main(["collect", "--results", str(tmp_path), "--crf-stage", "inline"]) == 0  # nothing left
    assert "no completed run with saved logits is waiting" in capsys.readouterr().err
