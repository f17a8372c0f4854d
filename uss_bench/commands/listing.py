"""``uss-bench list methods|datasets|backbones|protocols|tables``."""

from __future__ import annotations

import argparse

from uss_bench import registry

KINDS = {
    "methods": registry.METHODS,
    "datasets": registry.DATASETS,
    "backbones": registry.BACKBONES,
    "protocols": registry.PROTOCOLS,
    "tables": registry.TABLES,
}


def _describe(kind: str, name: str, obj: object) -> str:
    if kind == "protocols":
        return obj.description
    if kind == "backbones":
        return f"{getattr(obj, 'weights_file', '')}".strip()
    if kind == "datasets":
        return ", ".join(obj.__doc__.split("\n")[0:1]) if obj.__doc__ else ""
    if kind == "tables":
        return str(getattr(obj, "caption", "") or (obj.get("caption", "") if isinstance(obj, dict) else ""))
    return (obj.__doc__ or "").strip().split("\n")[0] if kind == "methods" else ""


def handle(args: argparse.Namespace) -> int:
    reg = KINDS[args.kind]
    for name in reg.names():
        desc = _describe(args.kind, name, reg.get(name))
        print(f"{name:16s} {desc}".rstrip())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("list", help="list registered methods, datasets, backbones, protocols or tables")
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.set_defaults(func=handle)
