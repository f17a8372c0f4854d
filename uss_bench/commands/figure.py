"""``uss-bench figure``: a qualitative prediction grid (--dataset) or a reported-vs-reproduced bar chart (--table)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from uss_bench.paths import default_data_root, default_results_dir


def handle(args: argparse.Namespace) -> int:
    from uss_bench.data.base import DatasetError
    from uss_bench.registry import UnknownNameError
    from uss_bench.results import figures

    try:
        if args.table:
            from uss_bench.results.tables import build_table

            layout, cells = build_table(args.table, args.results)
            out_path = args.out or Path(args.results) / "figures" / f"{args.table}.png"
            out = figures.table_bar_chart(layout, cells, out_path)
        else:
            if not args.dataset or not args.methods:
                print("uss-bench figure: error: give --table NAME, or --dataset D --methods m1,m2", file=sys.stderr)
                return 2
            methods = [m.strip() for m in args.methods.split(",") if m.strip()]
            ids = [i.strip() for i in args.ids.split(",")] if args.ids else None
            out = figures.qualitative_grid(args.results, args.dataset, methods, args.data_root,
                                           args.out or Path(args.results) / "figures" / f"{args.dataset}-grid.png",
                                           backbone=args.backbone, ids=ids, preset=args.preset)
    except (figures.FigureError, DatasetError, UnknownNameError, FileNotFoundError, ValueError) as exc:
        print(f"uss-bench figure: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "figure", help="qualitative grid (image | ground truth | predictions) or a table's reported-vs-reproduced bars",
        description="The grid reads saved predictions <results>/predictions/<run_id>/<image_id>.png (class ids, "
        "255 = ignore) of the newest completed run per method, on the dataset card's figure_ids.")
    parser.add_argument("--table", default=None, help="bar chart of this paper table (e.g. ppap-t1)")
    parser.add_argument("--dataset", default=None, help="dataset of the qualitative grid")
    parser.add_argument("--methods", default=None, help="comma-separated methods, one column each")
    parser.add_argument("--backbone", default=None, help="only runs with this backbone")
    parser.add_argument("--preset", default="default", help="dataset preset (e.g. smoke for synthetic)")
    parser.add_argument("--ids", default=None, help="image ids (default: the dataset card's figure_ids)")
    parser.add_argument("--results", default=default_results_dir(), help="results directory (default ./results)")
    parser.add_argument("--data-root", default=default_data_root(), help="data root (default $USS_BENCH_DATA or data)")
    parser.add_argument("--out", type=Path, default=None, help="output PNG (default <results>/figures/...)")
    parser.set_defaults(func=handle)
