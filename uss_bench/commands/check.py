"""``uss-bench check``: compare reproduced numbers with the papers or a saved results file; exit 1 on regression."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uss_bench.paths import default_results_dir


def _frame_of_dir_or_file(path: Path):
    from uss_bench.results.export import read_export, records_frame
    from uss_bench.results.records import load_records

    if path.is_dir():
        if not (path / "runs").is_dir():
            raise FileNotFoundError(f"{path} has no runs/ directory of run records")
        return records_frame(load_records(path))
    return read_export(path)


def handle(args: argparse.Namespace) -> int:
    from uss_bench.registry import TABLES, UnknownNameError
    from uss_bench.results import check

    try:
        tol = check.parse_tolerance(args.tolerance)
        current = _frame_of_dir_or_file(Path(args.results))
        if args.against == "reported":
            from uss_bench.results.reported import load_reported
            from uss_bench.results.reproduced import aggregate

            tables = None
            if args.tables:
                tables = {(TABLES.get(n).paper, TABLES.get(n).table) for n in TABLES.select(args.tables)}
            plain, with_overrides = check.without_overrides(current)
            result = check.against_reported(load_reported(args.reported), aggregate(plain), tol,
                                            args.tolerance_class, tables)
            if with_overrides:
                result.skipped["runs with --set overrides"] = with_overrides
            label = "reported"
        else:
            baseline = _frame_of_dir_or_file(Path(args.against))
            result = check.against_baseline(check.aggregate_like(current), check.aggregate_like(baseline), tol,
                                            args.tolerance_class)
            label = "baseline"
    except (FileNotFoundError, ValueError, UnknownNameError) as exc:
        print(f"uss-bench check: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(check.format_result(result, label))
    return result.exit_code


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check", help="compare reproduced numbers with reported ones or a saved results file (exit 1 on regression)",
        description="Tolerances: a run that evaluated released weights ±0.5 points; a retrain ±2 points or 2 sigma "
        "over seeds, whichever is larger. Override with --tolerance KEY=VALUE (KEY: checkpoint, retrain, sigma, "
        "a dataset, a metric, or dataset:metric).")
    parser.add_argument("--results", default=default_results_dir(),
                        help="results directory (default ./results) or an exported CSV/parquet")
    parser.add_argument("--against", default="reported",
                        help="'reported' (paper numbers, default) or a saved results directory / exported CSV/parquet")
    parser.add_argument("--tolerance", action="append", default=[], metavar="KEY=VALUE",
                        help="e.g. --tolerance retrain=1.5 --tolerance cocostuff27:cluster.miou=3 (repeatable)")
    parser.add_argument("--class", dest="tolerance_class", choices=("checkpoint", "retrain"), default=None,
                        help="force a tolerance class (default: checkpoint when the runs trained 0 steps)")
    parser.add_argument("--tables", default=None, help="only these paper tables (with --against reported)")
    parser.add_argument("--reported", default=None, help="directory of reported CSVs (default results/reported)")
    parser.set_defaults(func=handle)
