"""The per-run lock: held by a real other process, released when that process dies (even by kill -9)."""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import signal

import pytest

from uss_bench.results.locks import RunLockedError, holder_of, lock_path, run_lock


def _hold(results_dir: str, run_id: str, ready, release) -> None:
    with run_lock(results_dir, run_id):
        ready.set()
        release.wait(60)


@pytest.fixture
def holder(tmp_path):
    """A child process holding the lock of run 'abc' until told to go (or killed)."""
    ctx = mp.get_context("spawn")  # a fresh process, as a second shell would be
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold, args=(str(tmp_path), "abc", ready, release))
    proc.start()
    assert ready.wait(60), "the child never took the lock"
    yield proc, release
    if proc.is_alive():  # never touch the Event after a kill: the dead child may hold its semaphores
        release.set()
        proc.join(10)
    if proc.is_alive():
        proc.kill()


def test_second_process_is_refused_naming_the_holder(tmp_path, holder):
    proc, release = holder
    busy = rf"run abc is already running \(pid {proc.pid} on {platform.node()}"
    with pytest.raises(RunLockedError, match=busy), run_lock(tmp_path, "abc"):
        pass
    assert holder_of(tmp_path, "abc")["pid"] == proc.pid
    assert holder_of(tmp_path, "other") is None
    release.set()
    proc.join(10)
    assert holder_of(tmp_path, "abc") is None
    with run_lock(tmp_path, "abc") as me:  # free again
        assert me["pid"] == os.getpid()


def test_a_killed_holder_releases_the_lock_at_once(tmp_path, holder):
    proc, _ = holder
    os.kill(proc.pid, signal.SIGKILL)  # no cleanup runs: the kernel drops the flock
    proc.join(10)
    assert holder_of(tmp_path, "abc") is None
    with run_lock(tmp_path, "abc"):
        assert lock_path(tmp_path, "abc").is_file()


def test_the_label_carries_the_slurm_job_id(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4711")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    # a second open file description is refused even in the same process (flock semantics)
    with run_lock(tmp_path, "abc"), pytest.raises(RunLockedError, match=r"job id 4711_3"), run_lock(tmp_path, "abc"):
        pass
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    monkeypatch.setenv("SLURM_JOB_ID", "99")
    with run_lock(tmp_path, "abc"):
        assert holder_of(tmp_path, "abc")["job_id"] == "99"
    assert lock_path(tmp_path, "abc").read_text() == ""  # a released lock keeps no stale label
