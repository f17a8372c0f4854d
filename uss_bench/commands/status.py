"""``uss-bench status [SWEEP]``: per-run states of a submitted sweep (default: the newest one)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tabulate import tabulate

from uss_bench.paths import default_results_dir


def status_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for run in manifest["runs"]:
        spec = run["spec"]
        error = (run.get("error") or "").strip().splitlines()
        rows.append({
            "run_id": run["run_id"],
            "method": spec.get("method"),
            "dataset": spec.get("dataset"),
            "backbone": spec.get("backbone"),
            "seed": spec.get("seed"),
            "job": run.get("job_id"),
            "state": run["state"],
            "slurm": run.get("scheduler_state") or "-",
            "error": (error[0][:70] if error else ""),
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
    print(tabulate(status_rows(manifest), headers="keys", tablefmt="github"))
    print(", ".join(f"{n} {state}" for state, n in mf.counts(manifest).items()))
    failed = [r for r in manifest["runs"] if r["state"] == "failed"]
    if failed and args.errors:
        for run in failed:
            print(f"\n--- {run['run_id']} (job {run['job_id']}) ---\n{run.get('error')}")
    elif failed:
        print("failed runs: `uss-bench status --errors` shows their errors and log tails; "
              "`uss-bench run ... --retry-failed` submits them again", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="per-run states of a submitted sweep")
    parser.add_argument("sweep", nargs="?", default=None, help="sweep id or directory (default: the newest)")
    parser.add_argument("--results", default=default_results_dir(), help="results directory (default ./results)")
    parser.add_argument("--errors", action="store_true", help="print failed runs' errors with their log tails")
    parser.add_argument("--list", action="store_true", help="list the sweeps under --results")
    parser.add_argument("--no-refresh", action="store_true", help="print the manifest as saved; ask nobody")
    parser.set_defaults(func=handle)
