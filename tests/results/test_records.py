import os

import pytest

from uss_bench.results.records import (
    CorruptRecordError,
    atomic_write_text,
    load_record,
    load_records,
    quarantine,
    write_record,
)


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


def test_a_corrupt_record_raises_an_error_naming_the_file(tmp_path):
    path = tmp_path / "runs" / "abc.json"
    atomic_write_text(path, '{"run_id": "abc", "status": "compl')  # cut off mid-write
    with pytest.raises(CorruptRecordError, match=f"corrupt run record {path}") as info:
        load_record(tmp_path, "abc")
    assert info.value.path == path
    atomic_write_text(path, "[1, 2]\n")  # valid JSON, but not a record
    with pytest.raises(CorruptRecordError, match="expected a JSON object, found list"):
        load_record(tmp_path, "abc")
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(CorruptRecordError, match="abc.json"):
        load_records(tmp_path)


def test_quarantine_keeps_every_corrupt_file(tmp_path):
    path = tmp_path / "runs" / "abc.json"
    for n, text in enumerate(["{first", "{second"]):
        atomic_write_text(path, text)
        moved = quarantine(path)
        assert moved.name == ("abc.json.corrupt" if n == 0 else "abc.json.corrupt.1")
        assert moved.read_text() == text and not path.exists()
    assert load_records(tmp_path) == []  # *.corrupt files are not records


def test_records_are_readable_by_everyone_like_other_files(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = write_record(tmp_path, {"run_id": "abc", "status": "completed"})
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives under the same umask
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o666 & ~umask
    if umask == 0o022:
        assert path.stat().st_mode & 0o777 == 0o644  # was 0600 (mkstemp's mode)
