"""``uss-bench collect [SWEEP]``: gather a sweep's finished records (table, or CSV/parquet export)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uss_bench.paths import default_results_dir


def handle(args: argparse.Namespace) -> int:
    from uss_bench.launch import manifest as mf
    from uss_bench.launch import watchdog
    from uss_bench.launch.dispatch import print_records
    from uss_bench.results.records import CorruptRecordError, load_record

    try:
        manifest = mf.find(args.results, args.sweep)
    except (FileNotFoundError, ValueError) as exc:
        print(f"uss-bench collect: error: {exc}", file=sys.stderr)
        return 2
    watchdog.refresh_once(manifest)
    if args.crf_stage:
        code = run_deferred_crf(manifest, args.crf_stage, args.crf_profile)
        if code:
            return code
    finished = {r["run_id"] for r in manifest["runs"] if r["state"] in mf.TERMINAL_STATES}
    records, corrupt = [], []
    for run in manifest["runs"]:
        try:
            record = load_record(manifest["results_dir"], run["run_id"])
        except CorruptRecordError as exc:
            corrupt.append(str(exc))
            continue
        if record is not None and run["run_id"] in finished:
            records.append(record)
    print_records(records)
    pending = len(manifest["runs"]) - len(finished)
    completed = sum(r.get("status") == "completed" for r in records)
    print(f"sweep {manifest['sweep_id']}: {len(records)} record(s) collected ({completed} completed, "
          f"{len(records) - completed} failed); {pending} run(s) not finished", file=sys.stderr)
    for message in corrupt:
        print(f"uss-bench collect: error: {message} (`uss-bench run` with the same selection moves it aside and "
              "computes the run again)", file=sys.stderr)
    if corrupt:
        return 2
    if args.format:
        try:
            from uss_bench.results.export import export_records
        except ImportError as exc:
            print(f"uss-bench collect: error: --format needs uss_bench.results.export.export_records, "
                  f"which is not available in this installation ({exc})", file=sys.stderr)
            return 2
        out = args.out or Path(manifest["results_dir"]) / f"records.{args.format}"
        try:
            export_records(Path(manifest["results_dir"]), Path(out), args.format)
        except (CorruptRecordError, RuntimeError) as exc:  # another sweep's record, or no parquet engine
            print(f"uss-bench collect: error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {out}", file=sys.stderr)
    from uss_bench.results.report import refresh_report

    refresh_report(manifest["results_dir"])
    return 0 if pending == 0 else 1


def run_deferred_crf(manifest: dict, executor: str, profile: str | None) -> int:
    """CRF stage for the sweep's completed runs that saved their logits and have no CRF metrics yet."""
    from uss_bench.launch import crf_stage
    from uss_bench.launch.executors import LaunchError
    from uss_bench.launch.profiles import ProfileError
    from uss_bench.results.locks import RunLockedError
    from uss_bench.results.records import CorruptRecordError, load_record

    results_dir = manifest["results_dir"]
    todo = []
    for run in manifest["runs"]:
        try:
            record = load_record(results_dir, run["run_id"]) if run["state"] == "completed" else None
        except CorruptRecordError:
            record = None  # reported by the collection that follows
        has_logits = (crf_stage.logits_dir(results_dir, run["run_id"]) / "meta.json").is_file()
        if record and has_logits and "cluster_crf" not in record.get("metrics", {}):
            todo.append(run["run_id"])
    if not todo:
        print("CRF stage: no completed run with saved logits is waiting for its CRF", file=sys.stderr)
        return 0
    print(f"CRF stage: {len(todo)} run(s) ({executor}, profile {profile})", file=sys.stderr)
    try:
        crf_stage.run_stage(results_dir, todo, executor=executor, profile=profile)
    except (FileNotFoundError, LaunchError, ProfileError) as exc:
        print(f"uss-bench collect: error: CRF stage: {exc}", file=sys.stderr)
        return 2
    except RunLockedError as exc:  # its shards are kept: the next collect only merges
        print(f"uss-bench collect: error: CRF stage: {exc}; collect again when it has ended", file=sys.stderr)
        return 2
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("collect", help="gather the finished records of a submitted sweep")
    parser.add_argument("sweep", nargs="?", default=None, help="sweep id or directory (default: the newest)")
    parser.add_argument("--results", default=default_results_dir(), help="results directory (default ./results)")
    parser.add_argument("--format", choices=("csv", "parquet"), default=None,
                        help="also export the results directory's records with results.export")
    parser.add_argument("--out", type=Path, default=None, help="export file (default <results>/records.FORMAT)")
    parser.add_argument("--crf-stage", choices=("inline", "local", "slurm"), default=None,
                        help="first run the deferred CRF over saved logits (results/logits/RUN) of completed "
                             "runs that lack CRF metrics, here or as a CPU job array")
    parser.add_argument("--crf-profile", default="cpu", help="profile of the CRF jobs (default cpu)")
    parser.set_defaults(func=handle)
