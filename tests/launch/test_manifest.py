import json
from pathlib import Path

import pytest

from uss_bench.launch import manifest as mf


def test_save_load_roundtrip_and_atomic(tmp_path: Path):
    m = mf.new_manifest(tmp_path, "slurm", "local-ci", ["uss-bench", "run"])
    mf.add_run(m, {"method": "dino"}, "abc", "12_0", {"cpus_per_task": 1})
    path = mf.save(m)
    assert path == tmp_path.resolve() / "sweeps" / m["sweep_id"] / "manifest.json"
    assert [p.name for p in path.parent.iterdir()] == ["manifest.json"]  # no temp files left behind
    loaded = mf.load(path.parent)
    assert loaded == m and loaded["runs"][0]["state"] == "submitted"
    assert set(loaded) >= {"sweep_id", "created", "git_sha", "results_dir", "jobs_dir", "executor", "profile"}


def test_find_newest_by_id_and_by_path(tmp_path: Path):
    first = mf.new_manifest(tmp_path, "slurm", None)
    first["sweep_id"] = "20260101-000000-aaaa"
    first["sweep_dir"] = str(tmp_path / "sweeps" / first["sweep_id"])
    second = mf.new_manifest(tmp_path, "local", None)
    mf.save(first)
    mf.save(second)
    assert mf.find(tmp_path)["sweep_id"] == second["sweep_id"]
    assert mf.find(tmp_path, first["sweep_id"])["executor"] == "slurm"
    assert mf.find(tmp_path, first["sweep_dir"])["sweep_id"] == first["sweep_id"]
    with pytest.raises(FileNotFoundError, match="no sweep 'zzz'"):
        mf.find(tmp_path, "zzz")


def test_no_sweeps_and_corrupt_manifest(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no sweeps under"):
        mf.find(tmp_path)
    bad = tmp_path / "sweeps" / "x"
    bad.mkdir(parents=True)
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt sweep manifest"):
        mf.load(bad)


def test_counts_and_finished(tmp_path: Path):
    m = mf.new_manifest(tmp_path, "slurm", None)
    for state in ("completed", "failed", "running", "completed"):
        mf.add_run(m, {}, state, "1", {})["state"] = state
    assert mf.counts(m) == {"running": 1, "completed": 2, "failed": 1}
    assert not mf.is_finished(m)
    m["runs"][2]["state"] = "failed"
    assert mf.is_finished(m)


def test_manifest_on_disk_is_relative_and_json_that_is_not_a_manifest_is_named(tmp_path: Path):
    m = mf.new_manifest(tmp_path, "local", None)
    path = mf.save(m)
    saved = json.loads(path.read_text())
    assert (saved["results_dir"], saved["sweep_dir"], saved["jobs_dir"]) == (
        ".", f"sweeps/{m['sweep_id']}", f"sweeps/{m['sweep_id']}/jobs")
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "sweeps").rename(moved / "sweeps")
    loaded = mf.find(moved)
    assert loaded["results_dir"] == str(moved) and loaded["jobs_dir"] == str(moved / "sweeps" / m["sweep_id"] / "jobs")
    (moved / "sweeps" / m["sweep_id"] / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="corrupt sweep manifest .*not a manifest"):
        mf.find(moved)
