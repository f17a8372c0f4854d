"""Job state without sacct: ask ``squeue -t all`` / ``scontrol show job`` and look at the files jobs leave.

Why: on a Slurm without accounting submitit never learns that a job died without writing its result
pickle, and ``job.result()`` then waits forever. Here a run's state comes, in order, from
1. its run record (written by the runner inside the job),
2. submitit's result pickle (an exception raised before the runner could write a record),
3. the scheduler's view; a job that ended (or vanished) without 1 or 2 is marked failed after a short
   grace period, with the tail of its stderr, and a failed record is written so tables show it.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from uss_bench.launch import manifest as mf
from uss_bench.launch.jobs import ALREADY_RUNNING
from uss_bench.results.records import CorruptRecordError, quarantine, read_record, record_path, write_record

# Slurm job states -> run states (terminal Slurm states are handled separately: they need a result)
ACTIVE_STATES = {
    "PENDING": "pending",
    "CONFIGURING": "pending",
    "RESV_DEL_HOLD": "pending",
    "REQUEUED": "requeued",
    "REQUEUE_FED": "requeued",
    "REQUEUE_HOLD": "requeued",
    "RUNNING": "running",
    "COMPLETING": "running",
    "SIGNALING": "running",
    "STAGE_OUT": "running",
    "RESIZING": "running",
    "SUSPENDED": "running",
    "STOPPED": "running",
}
TERMINAL_SLURM_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
    "DEADLINE", "PREEMPTED", "SPECIAL_EXIT", "REVOKED",
}
SQUEUE_FORMAT = "%i|%T|%r"
COMMAND_TIMEOUT_S = 30
STDERR_TAIL_LINES = 20

Snapshot = dict[str, tuple[str, str]]  # job id -> (Slurm state, reason)


# ---------------------------------------------------------------- parsing (unit-tested on real output)


def expand_job_id(job_id: str) -> list[str]:
    """``7_[1-4%2]`` -> ``7_1 .. 7_4``; ``7_[0,3]`` -> ``7_0, 7_3``; plain ids unchanged."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if not match:
        return [job_id]
    master, ranges = match.groups()
    ranges = ranges.split("%", 1)[0]  # drop the array throttle
    ids: list[str] = []
    for part in ranges.split(","):
        lo, _, hi = part.partition("-")
        step = 1
        if ":" in hi:  # Slurm also accepts lo-hi:step
            hi, step_s = hi.split(":", 1)
            step = int(step_s)
        ids.extend(f"{master}_{i}" for i in range(int(lo), int(hi or lo) + 1, step))
    return ids


def parse_squeue(text: str) -> Snapshot:
    """Parse ``squeue -h -o '%i|%T|%r'`` output, expanding pending array ranges."""
    out: Snapshot = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.strip().split("|")
        if len(parts) < 2:
            raise ValueError(f"unexpected squeue line {line!r} (format {SQUEUE_FORMAT})")
        state = parts[1].split()[0].rstrip("+")  # "CANCELLED by 0" / "COMPLETED+" forms
        reason = parts[2] if len(parts) > 2 else ""
        for job_id in expand_job_id(parts[0]):
            out[job_id] = (state, reason)
    return out


_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=")


def parse_scontrol(text: str) -> list[dict[str, str]]:
    """Parse ``scontrol show job -o`` (one job per line, ``Key=Value`` pairs; values may hold spaces)."""
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        matches = list(_KEY.finditer(line))
        job: dict[str, str] = {}
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
            job[match.group(1)] = line[match.end() : end].strip()
        jobs.append(job)
    return jobs


def array_master(job_id: str) -> str:
    return str(job_id).split("_", 1)[0]


# ---------------------------------------------------------------- asking the scheduler


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None


def squeue_snapshot(job_ids: list[str]) -> Snapshot | None:
    """States of our jobs (and their array tasks); None when squeue does not answer.

    All jobs of the user are listed and filtered here: ``squeue -j`` fails as a whole when one id has
    aged out of the controller.
    """
    # a uid, not a name: containers may have no passwd entry for the user
    proc = _run(["squeue", "-t", "all", "-h", "-u", str(os.getuid()), "-o", SQUEUE_FORMAT])
    if proc is None or proc.returncode != 0:
        return None
    masters = {array_master(j) for j in job_ids}
    return {jid: st for jid, st in parse_squeue(proc.stdout).items() if array_master(jid) in masters}


def scontrol_job(job_id: str) -> dict[str, str] | None:
    proc = _run(["scontrol", "show", "job", "-o", str(job_id)])
    if proc is None or proc.returncode != 0:
        return None
    jobs = parse_scontrol(proc.stdout)
    return jobs[0] if jobs else None


# ---------------------------------------------------------------- files the job leaves


def job_paths(jobs_dir: str | Path, job_id: str) -> Any:
    from submitit.core.utils import JobPaths  # submitit import is slow; keep module import cheap

    return JobPaths(jobs_dir, job_id=str(job_id), task_id=0)


def read_result(jobs_dir: str | Path, job_id: str) -> tuple[str, Any] | None:
    """submitit's ``(outcome, value)`` result pickle, or None if there is none (yet)."""
    path = job_paths(jobs_dir, job_id).result_pickle
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    except Exception as exc:  # a half-written or foreign pickle: report it, do not crash the watcher
        return ("error", f"unreadable result pickle {path}: {exc!r}")


def tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def log_tail(jobs_dir: str | Path, job_id: str, lines: int = STDERR_TAIL_LINES) -> str:
    paths = job_paths(jobs_dir, job_id)
    err = tail(paths.stderr, lines)
    return err if err else tail(paths.stdout, lines)


def fresh_record(results_dir: str | Path, run: dict[str, Any]) -> dict[str, Any] | None:
    """The run's record if it was written after this submission (older ones belong to earlier attempts)."""
    path = record_path(results_dir, run["run_id"])
    try:
        if path.stat().st_mtime + 1.0 < run["submitted_at"]:
            return None
        return read_record(path)
    except (OSError, ValueError):
        return None


def write_failed_record(results_dir: str | Path, run: dict[str, Any], error_type: str, message: str,
                        log: str) -> None:
    """Record a run whose job died without a result, so tables and `--retry-failed` see it."""
    path = record_path(results_dir, run["run_id"])
    if path.exists() and fresh_record(results_dir, run) is not None:
        return  # the job managed to write its own record after all
    try:
        read_record(path)
    except CorruptRecordError:
        quarantine(path)  # keep the evidence beside the failed record
    except OSError:
        pass
    write_record(results_dir, {
        "run_id": run["run_id"],
        "status": "failed",
        "spec": run["spec"],
        "error": {"type": error_type, "message": message, "traceback": log},
        "job_id": run["job_id"],
        "metrics": {},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


# ---------------------------------------------------------------- reconciling a manifest


def _fail(manifest: dict[str, Any], run: dict[str, Any], error_type: str, message: str) -> None:
    log = log_tail(manifest["jobs_dir"], run["job_id"]) if run.get("job_id") else ""
    run["state"] = "failed"
    run["error"] = f"{message}\n--- tail of the job's log ---\n{log}" if log else message
    write_failed_record(manifest["results_dir"], run, error_type, message, log)


def refresh(
    manifest: dict[str, Any],
    snapshot: Snapshot | None,
    grace_s: float = 10.0,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Update every unfinished run's state in place; return the runs that changed state.

    ``snapshot`` is the scheduler's view (:func:`squeue_snapshot`); None means "no scheduler answer",
    in which case nothing is declared dead.
    """
    now = time.time() if now is None else now
    changed = []
    for run in manifest["runs"]:
        if run["state"] in mf.TERMINAL_STATES:
            continue
        before = run["state"]
        _refresh_run(manifest, run, snapshot, grace_s, now)
        if run["state"] != before:
            changed.append(run)
    return changed


def _refresh_run(manifest: dict[str, Any], run: dict[str, Any], snapshot: Snapshot | None,
                 grace_s: float, now: float) -> None:
    record = fresh_record(manifest["results_dir"], run)
    job_id = run.get("job_id")
    state, reason = snapshot.get(job_id, (None, "")) if snapshot is not None and job_id else (None, "")
    # A failed record while Slurm still holds the job is not final: submitit's preemption handler
    # exits through SystemExit (recorded as a failure) and the requeued job then runs again.
    still_held = state in ACTIVE_STATES
    status = (record or {}).get("status")
    if status == "completed" or (status == "failed" and not still_held):
        run["state"] = status
        run["scheduler_state"] = None  # decided by the record; the last squeue view would be stale
        if status == "failed":
            err = record.get("error") or {}
            run["error"] = f"{err.get('type', 'Error')}: {err.get('message', '')}"
        return
    if not job_id:
        return
    result = read_result(manifest["jobs_dir"], job_id)
    if result is not None:
        outcome, value = result
        if outcome == "success" and isinstance(value, dict) and value.get("status") == ALREADY_RUNNING:
            # the job found the run's lock taken: another process computes it; this job did nothing
            run["state"], run["scheduler_state"] = "skipped", None
            run["error"] = value.get("message") or "already running elsewhere"
            return
        if outcome == "error":
            run["scheduler_state"] = None
            err = (record or {}).get("error") or {}
            lines = [ln for ln in str(value).strip().splitlines() if ln.strip()]
            headline = f"{err['type']}: {err.get('message', '')}" if err.get("type") else (lines or ["?"])[-1]
            _fail(manifest, run, "JobError", f"{headline}\n(job {job_id} raised; traceback in its log)")
            return
        if record is None:
            # a success without a record: let the grace period cover a record still being renamed
            _terminal_after_grace(manifest, run, "COMPLETED", grace_s, now,
                                  f"job {job_id} returned but wrote no record")
        return
    if snapshot is None:
        return
    run["scheduler_state"] = state
    if state in ACTIVE_STATES:
        run["terminal_seen_at"] = None
        # a requeued job waits in PENDING with Reason=BeginTime until Slurm lets it start again
        run["state"] = "requeued" if state == "PENDING" and reason == "BeginTime" else ACTIVE_STATES[state]
        return
    if state is None:
        _terminal_after_grace(manifest, run, "GONE", grace_s, now,
                              f"job {job_id} is no longer known to Slurm and left no result")
    else:
        _terminal_after_grace(manifest, run, state, grace_s, now,
                              f"job {job_id} ended ({state}{_exit_code(job_id)}) without a result")


def _terminal_after_grace(manifest: dict[str, Any], run: dict[str, Any], state: str, grace_s: float,
                          now: float, message: str) -> None:
    if run.get("terminal_seen_at") is None:
        run["terminal_seen_at"] = now
    if now - run["terminal_seen_at"] >= grace_s:
        _fail(manifest, run, "JobDiedWithoutResult" if state != "COMPLETED" else "NoRecord", message)


def _exit_code(job_id: str) -> str:
    info = scontrol_job(job_id)
    return f", exit code {info['ExitCode']}" if info and info.get("ExitCode") else ""


# ---------------------------------------------------------------- waiting


def wait(
    manifest: dict[str, Any],
    snapshot_fn: Callable[[list[str]], Snapshot | None],
    timeout_s: float,
    poll_s: float = 2.0,
    grace_s: float = 10.0,
    on_change: Callable[[dict[str, Any], float], None] | None = None,
) -> bool:
    """Poll until every run is completed or failed, or ``timeout_s`` passes; True when all finished.

    The manifest is saved after every change so `uss-bench status` in another shell sees progress.
    """
    start = time.monotonic()
    job_ids = [r["job_id"] for r in manifest["runs"] if r.get("job_id")]
    while True:
        try:
            changed = refresh(manifest, snapshot_fn(job_ids), grace_s=grace_s)
        except Exception:  # a watcher bug must not lose the manifest; report and keep polling
            traceback.print_exc()
            changed = []
        if changed:
            mf.save(manifest)
            if on_change:
                on_change(manifest, time.monotonic() - start)
        if mf.is_finished(manifest):
            return True
        if time.monotonic() - start >= timeout_s:
            return False
        time.sleep(poll_s)


def snapshot_for(manifest: dict[str, Any]) -> Callable[[list[str]], Snapshot | None]:
    """The scheduler view that fits the sweep's executor (local jobs: is the process alive?)."""
    if manifest.get("executor") == "slurm":
        return squeue_snapshot
    return _local_snapshot


def _local_snapshot(job_ids: list[str]) -> Snapshot:
    alive: Snapshot = {}
    for job_id in job_ids:
        try:
            os.kill(int(job_id), 0)
            alive[job_id] = ("RUNNING", "")
        except (ValueError, OSError):
            pass
    return alive


def refresh_once(manifest: dict[str, Any], grace_s: float = 3.0) -> bool:
    """One status check for `status`/`collect`: a run whose job just ended gets one short second look.

    Returns False when the scheduler did not answer (states are then as last seen, or from records).
    """
    snapshot_fn = snapshot_for(manifest)
    job_ids = [r["job_id"] for r in manifest["runs"] if r.get("job_id")]
    snapshot = snapshot_fn(job_ids)
    changed = refresh(manifest, snapshot, grace_s=grace_s)
    if any(r["state"] not in mf.TERMINAL_STATES and r.get("terminal_seen_at") is not None
           for r in manifest["runs"]):
        time.sleep(grace_s)
        changed += refresh(manifest, snapshot_fn(job_ids), grace_s=grace_s)
    if changed:
        mf.save(manifest)
    return snapshot is not None
