"""``uss-bench report``: write the offline leaderboard site (HTML + CSS + PNG) from the records."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uss_bench.paths import default_data_root, default_results_dir


def handle(args: argparse.Namespace) -> int:
    from uss_bench.registry import UnknownNameError
    from uss_bench.results.report import ReportError, build_report

    results = Path(args.results)
    if not results.is_dir():
        print(f"uss-bench report: error: no results directory {results} (run `uss-bench run ...` first, or pass "
              "--results DIR)", file=sys.stderr)
        return 2
    tables = [t.strip() for t in args.tables.split(",") if t.strip()] if args.tables else None
    try:
        if tables:
            from uss_bench.registry import TABLES

            for name in tables:
                TABLES.get(name)  # unknown name -> one clear line with close matches, before any work
        index = build_report(results, args.out, reported_dir=args.reported, data_root=args.data_root,
                             tables=tables, draw_figures=not args.no_figures)
    except (ReportError, UnknownNameError) as exc:
        print(f"uss-bench report: error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {index}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="write an offline leaderboard site: every paper table, every run, the figures",
        description="A static site (no server, no JavaScript, no network) under --out: index.html with every paper "
        "table and its counts, one page per table (reported vs reproduced, delta coloured by the check verdict), "
        "one page per run (spec, protocol, environment, per-class IoU, saved predictions) and the figures.")
    parser.add_argument("--results", default=default_results_dir(), help="results directory (default ./results)")
    parser.add_argument("--out", type=Path, default=None, help="site directory (default <results>/report)")
    parser.add_argument("--reported", default=None, help="directory of reported CSVs (default results/reported)")
    parser.add_argument("--data-root", default=default_data_root(),
                        help="data root, for the qualitative grids (default $USS_BENCH_DATA or data)")
    parser.add_argument("--tables", default=None, help="only these tables (comma-separated; default all)")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures (faster)")
    parser.set_defaults(func=handle)
