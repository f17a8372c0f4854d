"""``uss-bench config METHOD DATASET``: every resolved setting of a run and the layer it came from.

Resolution reads the cards only, so it works without the data on disk. The layers are
``uss_bench.config.LAYERS`` (lowest first); the view prints them under the table.
"""

from __future__ import annotations

import argparse
import json
import sys

from uss_bench.commands.run import parse_overrides


def _render(config, layers) -> str:
    from tabulate import tabulate

    spec = config.spec
    values = config.values()
    rows = [(key, _show(value), config.value_sources.get(key, "?")) for key, value in values.items()]
    lines = [
        f"{spec.method} on {spec.dataset}, backbone {spec.backbone}, protocol {spec.protocol}, preset {spec.preset}",
        "",
        tabulate(rows, headers=["setting", "value", "source (layer, where)"], tablefmt="simple"),
    ]
    if config.train.get("epochs"):
        lines += ["", f"train.steps is replaced at run time by train.epochs ({config.train['epochs']}) x steps per "
                      "epoch (training images // batch_size)."]
    lines += ["", "layers, lowest first (a later layer wins):"]
    lines += [f"  {i}. {layer.name:<9} {layer.reads}; applies: {layer.applies}" for i, layer in enumerate(layers, 1)]
    lines += ["", "applied here:"] + [f"  - {note}" for note in config.sources]
    return "\n".join(lines)


def _show(value) -> str:
    return json.dumps(value) if isinstance(value, (list, tuple, bool)) or value is None else str(value)


def handle(args: argparse.Namespace) -> int:
    from uss_bench.config import LAYERS, resolve, validate_specs
    from uss_bench.pipeline import expand_specs
    from uss_bench.registry import UnknownNameError

    try:
        specs = expand_specs(args.method, args.dataset, backbones=args.backbone, protocol=args.protocol,
                             preset=args.preset, random_init=False, overrides=parse_overrides(args.set))
        if len(specs) != 1:
            raise ValueError(f"give one method, one dataset and one backbone; this selects {len(specs)} runs")
        validate_specs(specs)  # what `run` checks too (e.g. train.init_stage names a preset)
        config = resolve(specs[0])
    except (UnknownNameError, ValueError, FileNotFoundError) as exc:
        print(f"uss-bench config: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"spec": config.spec.to_dict(),
                          "values": {k: {"value": v, "source": config.value_sources.get(k)}
                                     for k, v in config.values().items()},
                          "layers": [layer.name for layer in LAYERS], "applied": config.sources},
                         indent=1, default=list))
    else:
        print(_render(config, LAYERS))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "config", help="show a run's resolved settings and the layer each comes from (cards only, no data needed)")
    parser.add_argument("method")
    parser.add_argument("dataset")
    parser.add_argument("--backbone", default=None, help="default: the method card's")
    parser.add_argument("--protocol", default=None, help="default: uss, as for `uss-bench run`")
    parser.add_argument("--preset", default="default", help="default | smoke")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, as for `uss-bench run`")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=handle)
