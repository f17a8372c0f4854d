"""Run records: one JSON file per run, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def record_path(results_dir: str | Path, run_id: str) -> Path:
    return Path(results_dir) / "runs" / f"{run_id}.json"


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same directory + os.replace: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_record(results_dir: str | Path, record: dict[str, Any]) -> Path:
    path = record_path(results_dir, record["run_id"])
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_record(path: str | Path) -> dict[str, Any]:
    with open(path) as fh:
        return json.load(fh)


def load_record(results_dir: str | Path, run_id: str) -> dict[str, Any] | None:
    path = record_path(results_dir, run_id)
    return read_record(path) if path.is_file() else None


def load_records(results_dir: str | Path) -> list[dict[str, Any]]:
    """All records under ``results_dir/runs``; an unreadable file is an error naming it."""
    runs = Path(results_dir) / "runs"
    records = []
    for path in sorted(runs.glob("*.json")):
        try:
            records.append(read_record(path))
        except json.JSONDecodeError as exc:
            raise ValueError(f"corrupt run record {path}: {exc}") from exc
    return records
