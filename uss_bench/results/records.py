"""Run records: one JSON file per run, written atomically, readable by every user (0644 under umask 022).

A record that cannot be parsed raises :class:`CorruptRecordError`, which names the file. Readers that
only list records (``table``, ``check``, ``collect``, ``status``) report it; ``run`` moves the file
aside to ``<run_id>.json.corrupt`` with :func:`quarantine` and computes the run again.
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

CORRUPT_SUFFIX = ".corrupt"


class CorruptRecordError(ValueError):
    """A run record that is not a JSON object; ``path`` is the file."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"corrupt run record {path}: {reason}")
        self.path = Path(path)


def record_path(results_dir: str | Path, run_id: str) -> Path:
    return Path(results_dir) / "runs" / f"{run_id}.json"


@lru_cache(maxsize=1)
def _file_mode() -> int:
    # mkstemp creates 0600; a record must be readable like any file this user creates (0666 & ~umask).
    # The umask can only be read by setting it; done once per process.
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same directory + os.replace: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fchmod(fh.fileno(), _file_mode())
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
    """One record; a file that is not a JSON object raises :class:`CorruptRecordError` naming it."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            record = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptRecordError(path, str(exc)) from exc
    if not isinstance(record, dict):
        raise CorruptRecordError(path, f"expected a JSON object, found {type(record).__name__}")
    return record


def load_record(results_dir: str | Path, run_id: str) -> dict[str, Any] | None:
    """The run's record, None when there is none; a corrupt file raises :class:`CorruptRecordError`."""
    path = record_path(results_dir, run_id)
    return read_record(path) if path.is_file() else None


def quarantine(path: str | Path) -> Path:
    """Move a corrupt record aside (``<name>.corrupt``, numbered if taken) so the run can be computed again."""
    path = Path(path)
    target = path.with_name(path.name + CORRUPT_SUFFIX)
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}{CORRUPT_SUFFIX}.{n}")
        n += 1
    os.replace(path, target)
    return target


def load_records(results_dir: str | Path) -> list[dict[str, Any]]:
    """All records under ``results_dir/runs``; an unreadable file is an error naming it."""
    runs = Path(results_dir) / "runs"
    return [read_record(path) for path in sorted(runs.glob("*.json"))]
