"""The launching half of ``uss-bench run``: --executor/--profile/--wait/--retry-failed/--timeout.

``run`` expands and preflights the specs (so a missing dataset or weights file stops everything
before a job is queued), then hands them here unless the executor is ``inline``.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from uss_bench.launch import executors as ex
from uss_bench.launch import manifest as mf
from uss_bench.launch import profiles

DEFAULT_WAIT_TIMEOUT_S = 24 * 3600.0


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("launching (see docs/cluster.md)")
    group.add_argument("--executor", choices=ex.EXECUTORS, default=None,
                       help="inline (this process) | local (submitit processes) | slurm (job arrays). "
                            "Default: $USS_BENCH_EXECUTOR, else slurm where a Slurm controller answers, else local")
    group.add_argument("--profile", default=None,
                       help=f"cluster profile slurm/profiles/NAME.yaml ({', '.join(profiles.available_profiles())})")
    group.add_argument("--resource", action="append", default=[], metavar="KEY=VALUE",
                       help="override one profile key, e.g. --resource mem_gb=64 --resource partition=long")
    group.add_argument("--wait", action="store_true",
                       help="slurm: block until every run finished, printing progress (else submit and return)")
    group.add_argument("--timeout", type=float, default=DEFAULT_WAIT_TIMEOUT_S, metavar="SECONDS",
                       help="give up waiting after this long (default 24 h); jobs keep running")
    group.add_argument("--poll", type=float, default=5.0, metavar="SECONDS", help="status poll period (default 5)")
    group.add_argument("--retry-failed", action="store_true",
                       help="also run again the runs that failed on bad input (a plain re-run retries every "
                            "other failure and skips those; see README, 'What a run records')")


def chosen_executor(args: argparse.Namespace) -> str:
    return getattr(args, "executor", None) or ex.default_executor()


def sweep_records(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of a sweep's runs that exist now (fresh or not: the table shows what is on disk)."""
    from uss_bench.results.records import load_record

    records = []
    for run in manifest["runs"]:
        record = load_record(manifest["results_dir"], run["run_id"])
        if record is not None:
            records.append(record)
    return records


def spec_records(specs: list[Any], results_dir: Any) -> list[dict[str, Any]]:
    """Records on disk for the requested specs, in the order asked (submitted and skipped alike)."""
    from uss_bench.results.records import load_record

    return [r for r in (load_record(results_dir, s.run_id) for s in specs) if r is not None]


def print_records(records: list[dict[str, Any]]) -> None:
    if not records:
        return
    try:
        from uss_bench.results.summary import records_table
    except ImportError:  # the summary module is optional here; fall back to one line per record
        for rec in records:
            print(f"{rec['run_id']}  {rec.get('status')}")
        return
    print(records_table(records))


def failure_line(error_type: str | None, message: str | None) -> str:
    """One line for a failed run: the exception's own line, also when a DataLoader worker wrapped it (then the
    original error, e.g. ``DatasetError: corrupt or truncated image <path>``, is the message's last line)."""
    lines = [line.strip() for line in str(message or "").splitlines() if line.strip()]
    if lines and "Original Traceback" in str(message):
        last = lines[-1]
        name, sep, rest = last.partition(": ")
        return f"{name.rsplit('.', 1)[-1]}: {rest}" if sep else last
    return f"{error_type or 'Error'}: {lines[0] if lines else ''}"


RANDOM_INIT_NOTE = ("\nrandom init: backbone weights were random (no DINO weights); numbers test the pipeline, "
                    "not the method.")


def print_random_init_note(specs: list[Any]) -> None:
    """The footnote under every table of runs with random backbones, whatever the executor."""
    if any(getattr(s, "random_init", False) for s in specs):
        print(RANDOM_INIT_NOTE)


def last_step(log_path: Path) -> tuple[int, int | None] | None:
    """(step, total) of the newest training log line that has them; None before the first one."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 4096))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line being written, or cut by the 4 KiB window
        if isinstance(entry, dict) and "step" in entry and "val_score" not in entry:
            return int(entry["step"]), entry.get("total")
    return None


def stage_in_training(log_path: Path) -> tuple[str, str] | None:
    """(preset, run id) of the earlier stage a run is training first (``train.init_stage``), named in
    its log before its own first step; None otherwise."""
    try:
        with open(log_path, "rb") as fh:
            lines = fh.read(4096).decode(errors="replace").splitlines()  # written before any step
    except OSError:
        return None
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "stage_run_id" in entry:
            return str(entry.get("stage")), str(entry["stage_run_id"])
    return None


class StepProgress:
    """Between the executors' status lines: each unfinished run's training step out of its total, read from
    ``<results>/logs/<run_id>.jsonl`` every ``period_s``, printed when it changed."""

    def __init__(self, specs: list[Any], results_dir: Path, period_s: float = 10.0) -> None:
        self.specs, self.results_dir, self.period_s = specs, Path(results_dir), period_s
        self.shown: dict[str, tuple[str, int, int | None]] = {}
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="uss-bench-progress", daemon=True)

    def lines(self) -> list[str]:
        out = []
        for spec in self.specs:
            if (self.results_dir / "runs" / f"{spec.run_id}.json").is_file():
                continue  # finished: the status line says so
            log = self.results_dir / "logs" / f"{spec.run_id}.jsonl"
            now, what = last_step(log), "step"
            stage = stage_in_training(log) if now is None else None
            if stage is not None:  # training its earlier stage first: show that run's steps
                now, what = last_step(self.results_dir / "logs" / f"{stage[1]}.jsonl"), f"stage {stage[0]} step"
            if now is None or self.shown.get(spec.run_id) == (what, *now):
                continue
            self.shown[spec.run_id] = (what, *now)
            step, total = now
            out.append(f"[{time.monotonic() - self.start:6.0f}s]   {spec.run_id} {spec.label()}: "
                       f"{what} {step}/{total if total is not None else '?'}")
        return out

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            for line in self.lines():
                print(line, file=sys.stderr, flush=True)

    def __enter__(self) -> StepProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.period_s)


def launch(args: argparse.Namespace, specs: list[Any], env: Any, executor: str) -> int:
    """Submit (slurm) or run (local) ``specs``; returns the exit code for ``run``."""
    from uss_bench.pipeline.plan import plan_runs  # here: `uss-bench --help` must not import torch
    try:
        overrides = profiles.parse_overrides(args.resource)
        groups = ex.group_by_resources(specs, args.profile, overrides)  # bad profiles/keys fail here
        if executor == "slurm":
            ex.check_slurm_request(groups, args.profile)
        plan = plan_runs(specs, env.results_dir, env.force, args.retry_failed)  # the rule of every executor
        for line in plan.messages():
            print(line, file=sys.stderr)
        todo = plan.to_run
        if not todo:
            print("nothing to submit", file=sys.stderr)
            print_records(spec_records(specs, env.results_dir))
            print_random_init_note(specs)
            return 1 if plan.input_failed else (3 if plan.busy else 0)
        argv = list(sys.argv)
        if executor == "local":
            with StepProgress(todo, env.results_dir, period_s=max(args.poll, 2.0)):
                manifest = ex.run_local(todo, env, args.profile, overrides, argv=argv, timeout_s=args.timeout,
                                        poll_s=min(args.poll, 1.0), on_change=ex.print_progress)
            finished = True
        else:
            manifest, _ = ex.submit(todo, env, "slurm", args.profile, overrides, argv=argv)
            job_ids = sorted({r["job_id"].split("_")[0] for r in manifest["runs"]})
            print(f"submitted {len(todo)} run(s) as sweep {manifest['sweep_id']} "
                  f"(Slurm job(s) {', '.join(job_ids)}); manifest {mf.manifest_path(manifest)}", file=sys.stderr)
            if not args.wait:
                print(f"follow with `uss-bench status {manifest['sweep_id']}`, gather with "
                      f"`uss-bench collect {manifest['sweep_id']}`", file=sys.stderr)
                return 0
            with StepProgress(todo, env.results_dir, period_s=max(args.poll, 2.0)):
                finished = ex.wait_for(manifest, timeout_s=args.timeout, poll_s=args.poll,
                                       on_change=ex.print_progress)
    except (profiles.ProfileError, ex.LaunchError) as exc:
        print(f"uss-bench run: error: {exc}", file=sys.stderr)
        return 2
    print_records(spec_records(specs, env.results_dir))
    print_random_init_note(specs)
    if not finished:
        print(f"timed out after {args.timeout:.0f} s with {mf.counts(manifest)}; the jobs keep running: "
              f"`uss-bench status {manifest['sweep_id']}`", file=sys.stderr)
        return 3
    bad = [r for r in manifest["runs"] if r["state"] not in ("completed", "skipped")]
    from uss_bench.results.records import load_record

    for run in bad:
        err = (load_record(env.results_dir, run["run_id"]) or {}).get("error") or {}
        line = (failure_line(err.get("type"), err.get("message")) if err
                else failure_line(None, run.get("error")).removeprefix("Error: "))
        print(f"FAILED {run['run_id']} (job {run['job_id']}): {line}", file=sys.stderr)
    for run in manifest["runs"]:
        if run["state"] == "skipped":
            print(f"SKIPPED {run['run_id']} (job {run['job_id']}): {run.get('error')}", file=sys.stderr)
    if bad:
        print("`uss-bench status --errors` shows the failed runs' log tails", file=sys.stderr)
    busy = plan.busy or any(r["state"] == "skipped" for r in manifest["runs"])
    return 1 if bad or plan.input_failed else (3 if busy else 0)
