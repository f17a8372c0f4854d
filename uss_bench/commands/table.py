"""``uss-bench table NAME``: a paper table with reproduced numbers beside the reported ones."""

from __future__ import annotations

import argparse
import sys

from uss_bench.paths import default_results_dir


def handle(args: argparse.Namespace) -> int:
    from uss_bench.registry import UnknownNameError
    from uss_bench.results.reported import ReportedError
    from uss_bench.results.tables import TableError, build_table, render_table

    try:
        layout, cells = build_table(args.name, args.results, args.reported, any_protocol=args.any_protocol)
    except (UnknownNameError, ReportedError, TableError, ValueError) as exc:
        print(f"uss-bench table: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render_table(layout, cells, args.format))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "table", help="regenerate a paper table: reported vs reproduced (see: uss-bench list tables)")
    parser.add_argument("name", help="table name, e.g. ppap-t1")
    parser.add_argument("--format", choices=("md", "latex", "csv"), default="md")
    parser.add_argument("--results", default=default_results_dir(), help="results directory (default ./results)")
    parser.add_argument("--reported", default=None, help="directory of reported CSVs (default results/reported)")
    parser.add_argument("--any-protocol", action="store_true",
                        help="fill cells from runs of any protocol (default: only the paper's protocol)")
    parser.set_defaults(func=handle)
