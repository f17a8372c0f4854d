"""``uss-bench`` command line: parses, calls library functions, prints.

Each subcommand lives in its own module under ``uss_bench/commands/`` and registers itself with
``register(subparsers)``; this file only discovers them, so adding a command touches no shared file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import uss_bench
import uss_bench.commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uss-bench", description="Unsupervised semantic segmentation benchmark harness"
    )
    parser.add_argument("--version", action="version", version=f"uss-bench {uss_bench.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(uss_bench.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"uss_bench.commands.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as exc:
        print(f"uss-bench: error: {exc}", file=sys.stderr)
        return 2


class UserError(Exception):
    """A problem with the user's input or files: printed as one line, no traceback."""


if __name__ == "__main__":
    sys.exit(main())
