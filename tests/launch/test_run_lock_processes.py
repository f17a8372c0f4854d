"""The same run never trains twice at once, with real processes: two shells, and an orphaned local job.

Each `uss-bench` here is a real process (``fake_training.py``: the real CLI with the training replaced
by logged "steps"); the run holds ``<results>/locks/<run_id>.lock`` while it works. The fake training
waits for a file the test creates, so the overlap does not depend on timing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fake_training
import pytest

import uss_bench.launch.jobs as jobs
import uss_bench.pipeline.execute as execute
from uss_bench.cli import main
from uss_bench.results.locks import holder_of
from uss_bench.results.records import load_record, record_path
from uss_bench.spec import RunSpec

SCRIPT = Path(fake_training.__file__)
SPEC = RunSpec("dino", "synthetic", "vit-s8", seed=0, preset="smoke", random_init=True)
pytestmark = pytest.mark.slow


def args(results: Path, executor: str) -> list[str]:
    return ["run", "--methods", "dino", "--datasets", "synthetic", "--preset", "smoke", "--executor", executor,
            "--results", str(results), "--data-root", str(results.parent / "data")]


def start(results: Path, executor: str, hold: Path) -> subprocess.Popen:
    env = {**os.environ, "FAKE_STEPS": "3", "FAKE_STEP_S": "0.2", "FAKE_HOLD_FILE": str(hold),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(execute.__file__).parents[2]),
                                                       os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, str(SCRIPT), *args(results, executor)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def starts(results: Path) -> list[str]:
    log = results / "fake_steps.log"
    return [ln for ln in log.read_text().splitlines() if "step 1/" in ln] if log.exists() else []


def wait_until(condition, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_same_spec_started_in_two_shells_trains_once(tmp_path: Path):
    results, hold = tmp_path / "results", tmp_path / "go"
    shells = [start(results, "inline", hold), start(results, "inline", hold)]
    try:
        # whichever takes the lock trains and waits for `hold`; the other must give up meanwhile
        loser = None
        deadline = time.monotonic() + 180
        while loser is None:
            assert time.monotonic() < deadline, "neither shell gave up"
            loser = next((p for p in shells if p.poll() is not None), None)
            time.sleep(0.2)
        out, err = loser.communicate()
        winner = next(p for p in shells if p is not loser)
        assert loser.returncode == 3, err
        assert "Traceback" not in err
        (started,) = starts(results)
        pid = int(started.split(" pid ")[1].split()[0])
        assert pid == winner.pid
        assert f"is already running (pid {pid} on " in err and "skipped" in err
        hold.touch()
        winner_out, winner_err = winner.communicate(timeout=120)
        assert winner.returncode == 0, winner_err
    finally:
        for p in shells:
            if p.poll() is None:
                p.kill()
    assert len(starts(results)) == 1  # trained once
    assert load_record(results, SPEC.run_id)["status"] == "completed"


def test_rerun_after_the_parent_of_a_local_job_was_killed_does_not_start_a_duplicate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    results, hold = tmp_path / "results", tmp_path / "go"
    parent = start(results, "local", hold)
    try:
        wait_until(lambda: len(starts(results)) == 1, 180)
        parent.send_signal(signal.SIGKILL)  # the `uss-bench run --executor local` process dies...
        parent.wait(30)
        orphan = holder_of(results, SPEC.run_id)  # ...its job keeps going, holding the run's lock
        assert orphan is not None and orphan["pid"] != parent.pid
        os.kill(orphan["pid"], 0)
        # a re-run in this process (same fake training, same local executor) must not start a duplicate
        monkeypatch.setattr(execute, "_execute", fake_training.fake_execute)
        monkeypatch.setattr(jobs, "SpecJob", fake_training.FakeSpecJob)
        assert main(args(results, "local")) == 3
        err = capsys.readouterr().err
        assert f"already running (pid {orphan['pid']} on " in err and "Traceback" not in err
        assert main(["status", "--no-refresh", "--results", str(results)]) == 0
        assert f"pid {orphan['pid']}" in capsys.readouterr().out
        hold.touch()
        wait_until(lambda: holder_of(results, SPEC.run_id) is None and record_path(results, SPEC.run_id).exists())
    finally:
        hold.touch()
        if parent.poll() is None:
            parent.kill()
    assert len(starts(results)) == 1  # the log shows each step once
    assert load_record(results, SPEC.run_id)["status"] == "completed"
    assert main(args(results, "local")) == 0
    assert "1 run(s) already completed: skipped" in capsys.readouterr().err
