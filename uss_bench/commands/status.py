"""``uss-bench status [SWEEP]``: per-run states of a submitted sweep (default: the newest one)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

from tabulate import tabulate

from uss_bench.paths import default_results_dir


def observed_state(manifest: dict[str, Any], run: dict[str, Any]) -> tuple[str, str]:
    """(state, note) of one run from its lock and its record; the manifest's state only as a fallback.

    A process holding the run's lock is computing it now. Otherwise a record decides once it is newer
    than the submission, or once the manifest calls the run finished: the manifest can lag behind (a
    watcher killed before it saved the last states), and another sweep may have computed the run since.
    A record older than a submission that is still queued belongs to an earlier attempt.
    """
    from uss_bench.launch import manifest as mf
    from uss_bench.results.locks import describe_holder, holder_of
    from uss_bench.results.records import CorruptRecordError, load_record, record_path

    results_dir = manifest["results_dir"]
    holder = holder_of(results_dir, run["run_id"])
    if holder is not None:
        return "running", describe_holder(holder)
    try:
        record = load_record(results_dir, run["run_id"])
    except CorruptRecordError as exc:
        return "corrupt", str(exc)
    error = (run.get("error") or "").strip().splitlines()
    note = error[0] if error else ""
    if record is None:
        return ("no record", "the run's record is missing") if run["state"] == "completed" else (run["state"], note)
    fresh = record_path(results_dir, run["run_id"]).stat().st_mtime + 1.0 >= run.get("submitted_at", 0)
    status = record.get("status")
    if status in ("completed", "failed") and (fresh or run["state"] in mf.TERMINAL_STATES):
        err = record.get("error") or {}
        return status, (f"{err.get('type')}: {err.get('message', '')}" if status == "failed" else "")
    return run["state"], note


def status_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for run in manifest["runs"]:
        spec = run["spec"]
        state, note = observed_state(manifest, run)
        rows.append({
            "run_id": run["run_id"],
            "method": spec.get("method"),
            "dataset": spec.get("dataset"),
            "backbone": spec.get("backbone"),
            "seed": spec.get("seed"),
            "job": run.get("job_id"),
            "state": state,
            "slurm": run.get("scheduler_state") or "-",
            "note": note.strip().splitlines()[0][:90] if note.strip() else "",
            "_full_note": note,
        })
    return rows


def handle(args: argparse.Namespace) -> int:
    from uss_bench.launch import manifest as mf
    from uss_bench.launch import watchdog

    if args.list:
        for path in mf.list_sweeps(args.results):
            m = mf.load(path)
            counts = ", ".join(f"{n} {s}" for s, n in mf.counts(m).items())
            print(f"{m['sweep_id']}  {m['executor']:6s} {m.get('profile') or '-':12s} {counts}")
        return 0
    try:
        manifest = mf.find(args.results, args.sweep)
    except (FileNotFoundError, ValueError) as exc:
        print(f"uss-bench status: error: {exc}", file=sys.stderr)
        return 2
    if not args.no_refresh and not watchdog.refresh_once(manifest):
        print("warning: Slurm did not answer (squeue); states are those last seen or from run records",
              file=sys.stderr)
    print(f"sweep {manifest['sweep_id']} ({manifest['executor']}, profile {manifest.get('profile') or '-'}, "
          f"git {(manifest.get('git_sha') or 'unknown')[:12]}, created {manifest['created']})")
    rows = status_rows(manifest)
    print(tabulate([{k: v for k, v in row.items() if not k.startswith("_")} for row in rows], headers="keys",
                   tablefmt="github"))
    counts = Counter(row["state"] for row in rows)
    order = [*mf.RUN_STATES, "corrupt", "no record"]
    print(", ".join(f"{counts[state]} {state}" for state in sorted(counts, key=order.index)))
    corrupt = [row for row in rows if row["state"] == "corrupt"]
    for row in corrupt:
        print(f"uss-bench status: error: {row['_full_note']} (`uss-bench run` moves it aside and computes the run "
              "again)", file=sys.stderr)
    failed = [r for r in manifest["runs"] if r["state"] == "failed"]
    if failed and args.errors:
        for run in failed:
            print(f"\n--- {run['run_id']} (job {run['job_id']}) ---\n{run.get('error')}")
    elif failed:
        print("failed runs: `uss-bench status --errors` shows their errors and log tails; "
              "a plain `uss-bench run ...` retries those not caused by bad input, --retry-failed all of them",
              file=sys.stderr)
    return 2 if corrupt else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="per-run states of a submitted sweep")
    parser.add_argument("sweep", nargs="?", default=None, help="sweep id or directory (default: the newest)")
    parser.add_argument("--results", default=default_results_dir(), help="results directory (default ./results)")
    parser.add_argument("--errors", action="store_true", help="print failed runs' errors with their log tails")
    parser.add_argument("--list", action="store_true", help="list the sweeps under --results")
    parser.add_argument("--no-refresh", action="store_true", help="print the manifest as saved; ask nobody")
    parser.set_defaults(func=handle)
