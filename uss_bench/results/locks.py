"""One lock per run id, so the same run never trains twice at once.

``<results>/locks/<run_id>.lock`` is held with ``fcntl.flock`` for as long as the run works. The kernel
drops the lock when the holding process ends, however it ends (``kill -9`` included), so a lock is
never stale. The holder writes who it is into the file (pid, host, Slurm job id when there is one);
the file is only a label: whether the run is busy is decided by the lock, never by the file's text.

Across machines this relies on the shared filesystem's ``flock`` (NFS through its lock manager,
Lustre mounted with ``-o flock``, GPFS, BeeGFS). On a filesystem without it, flock is local to each
node.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_LABEL_RETRIES = 5


class RunLockedError(RuntimeError):
    """The run is already being computed by another process; ``holder`` says which."""

    def __init__(self, run_id: str, holder: dict[str, Any]) -> None:
        super().__init__(f"run {run_id} is already running ({describe_holder(holder)})")
        self.run_id = run_id
        self.holder = holder


def lock_path(results_dir: str | Path, run_id: str) -> Path:
    return Path(results_dir) / "locks" / f"{run_id}.lock"


def slurm_job_id() -> str | None:
    """``<array job>_<task>`` inside an array task, the plain job id in a job, None outside Slurm."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def describe_holder(holder: dict[str, Any]) -> str:
    parts = [f"pid {holder.get('pid', '?')}"]
    if holder.get("host"):
        parts[0] += f" on {holder['host']}"
    if holder.get("job_id"):
        parts.append(f"job id {holder['job_id']}")
    if holder.get("started"):
        parts.append(f"since {holder['started']}")
    return " / ".join(parts)


def _read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode(errors="replace")
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        holder = None
    # the holder writes its label right after taking the lock; a reader can land in between
    return holder if isinstance(holder, dict) else {"pid": "?"}


def _try_lock(path: Path) -> tuple[int, dict[str, Any] | None]:
    """(fd, None) with the lock held, or (-1, holder) when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise
        holder = _read_holder(fd)
        os.close(fd)
        return -1, holder
    return fd, None


def holder_of(results_dir: str | Path, run_id: str) -> dict[str, Any] | None:
    """Who is computing ``run_id`` now (pid, host, job id), or None when nobody is."""
    path = lock_path(results_dir, run_id)
    if not path.exists():
        return None
    fd, holder = _try_lock(path)
    if fd >= 0:
        os.close(fd)  # closing drops the probe's lock at once
    return holder


@contextmanager
def run_lock(results_dir: str | Path, run_id: str) -> Iterator[dict[str, Any]]:
    """Hold the run's lock for the ``with`` block; :class:`RunLockedError` if another process has it."""
    path = lock_path(results_dir, run_id)
    for attempt in range(_LABEL_RETRIES):
        fd, holder = _try_lock(path)
        # an unlabelled holder is a starter between flock and its label, or a brief `holder_of` probe
        if fd >= 0 or (holder or {}).get("pid") != "?" or attempt == _LABEL_RETRIES - 1:
            break
        time.sleep(0.1)
    if fd < 0:
        raise RunLockedError(run_id, holder or {})
    me = {"pid": os.getpid(), "host": platform.node(), "job_id": slurm_job_id(),
          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        yield me
    finally:
        try:
            os.ftruncate(fd, 0)  # still ours: nobody reads a finished holder's label
        finally:
            os.close(fd)
