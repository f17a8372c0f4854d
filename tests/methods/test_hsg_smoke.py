"""HSG end to end through the CLI on synthetic data, under its own hsg-knn protocol."""

import json

import pytest

from uss_bench.cli import main


@pytest.mark.slow
def test_hsg_knn_smoke_run(tmp_path):
    args = ["run", "--methods", "hsg", "--datasets", "synthetic", "--preset", "smoke", "--protocol", "hsg-knn",
            "--results", str(tmp_path / "r"), "--data-root", str(tmp_path / "d"), "--set", "train.steps=2"]
    assert main(args) == 0
    (record_file,) = (tmp_path / "r" / "runs").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "completed", record.get("error")
    assert record["protocol"]["evaluator"] == "knn-segments" and record["protocol"]["knn_k"] == 20
    assert record["config"]["hparams"]["oversegmentation"]["source"] == "felzenszwalb"  # recorded substitute
    knn = record["metrics"]["knn"]
    assert 0 <= knn["miou"] <= knn["acc"] <= 100 and knn["memory_size"] > 0
    assert set(record["metrics"]["nfcovering"]) == {"segments", "fine", "coarse"}
    assert set(record["train"]["last_losses"]) >= {"img_sim", "fine", "coarse", "dmon_modularity", "centroid"}
