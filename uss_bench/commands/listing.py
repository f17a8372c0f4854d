"""``uss-bench list methods|datasets|backbones|protocols|tables``.

Methods, datasets and tables are listed from their YAML cards and backbones from
``uss_bench/backbones/catalog.py``, protocols from the torch-free modules that define them, so the
command never imports torch (tests keep all of them in step with the registries).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import yaml

from uss_bench.paths import PROJECT_ROOT, cards_dir

KINDS = ("backbones", "datasets", "methods", "protocols", "tables")
# the modules that define protocols: none imports torch, so `list protocols` stays fast
PROTOCOL_MODULES = ("uss_bench.eval.protocol", "uss_bench.eval.protocols_cnn", "uss_bench.eval.protocols_hsg",
                    "uss_bench.eval.protocols_san", "uss_bench.eval.protocols_imagenet_s")

def _one_line(text: object) -> str:
    return " ".join(str(text or "").split())


def _cards(directory: Path, field: str) -> dict[str, str]:
    out = {}
    for path in sorted(directory.glob("*.yaml")):
        with open(path) as fh:
            card = yaml.safe_load(fh) or {}
        out[str(card.get("name", path.stem))] = _one_line(card.get(field))
    return out


def entries(kind: str) -> dict[str, str]:
    """Name -> one-line description of every registered ``kind``."""
    if kind == "methods":
        return _cards(cards_dir("methods"), "title")
    if kind == "datasets":
        return _cards(cards_dir("datasets"), "title")
    if kind == "tables":
        return _cards(Path(os.environ.get("USS_BENCH_HOME", PROJECT_ROOT)) / "results" / "tables", "caption")
    if kind == "backbones":
        from uss_bench.backbones.catalog import BACKBONE_CATALOG

        return dict(BACKBONE_CATALOG)
    import importlib

    from uss_bench.registry import PROTOCOLS

    for module in PROTOCOL_MODULES:  # torch-free; a test keeps this list complete
        importlib.import_module(module)
    return {name: _one_line(p.description) for name, p in PROTOCOLS.registered().items()}


def format_entries(items: dict[str, str]) -> str:
    """Two columns; the first as wide as the longest name, so long names never push descriptions out of line."""
    width = max((len(n) for n in items), default=0)
    return "\n".join(f"{name:<{width}}  {desc}".rstrip() for name, desc in sorted(items.items()))


def handle(args: argparse.Namespace) -> int:
    print(format_entries(entries(args.kind)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("list", help="list registered methods, datasets, backbones, protocols or tables")
    parser.add_argument("kind", choices=KINDS)
    parser.set_defaults(func=handle)
