"""SAN end to end through the CLI on synthetic data."""

import json

import pytest

from uss_bench.cli import main


@pytest.mark.slow
def test_san_smoke_run(tmp_path):
    args = ["run", "--methods", "san", "--datasets", "synthetic", "--preset", "smoke",
            "--results", str(tmp_path / "r"), "--data-root", str(tmp_path / "d"), "--set", "train.steps=4"]
    assert main(args) == 0
    (record_file,) = (tmp_path / "r" / "runs").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "completed", record.get("error")
    assert record["spec"]["backbone"] == "san-vit"
    cluster = record["metrics"]["cluster"]
    assert len(cluster["assignment"]) == 6  # N = n_classes semantics from SAN's own attention head
    assert set(record["train"]["last_losses"]) >= {"rec", "con", "ortho"}
