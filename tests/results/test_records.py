import os

import pytest

from uss_bench.results.records import atomic_write_text, load_record, load_records, write_record


def test_write_and_load_roundtrip(tmp_path):
    write_record(tmp_path, {"run_id": "abc", "status": "completed", "metrics": {"cluster": {"acc": 1.5}}})
    assert load_record(tmp_path, "abc")["metrics"]["cluster"]["acc"] == 1.5
    assert load_record(tmp_path, "missing") is None
    assert [r["run_id"] for r in load_records(tmp_path)] == ["abc"]


def test_failed_write_leaves_previous_record_intact(tmp_path, monkeypatch):
    write_record(tmp_path, {"run_id": "abc", "status": "completed"})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_record(tmp_path, {"run_id": "abc", "status": "failed"})
    monkeypatch.undo()
    assert load_record(tmp_path, "abc")["status"] == "completed"
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["abc.json"]  # no temp files left


def test_corrupt_record_is_named(tmp_path):
    atomic_write_text(tmp_path / "runs" / "bad.json", "{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_records(tmp_path)
