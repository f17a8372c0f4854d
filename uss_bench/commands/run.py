"""``uss-bench run``: expand a grid of runs, check inputs up front, run them, print the table."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from uss_bench.paths import default_data_root, default_results_dir, default_weights_dir

log = logging.getLogger("uss_bench.run")


def parse_overrides(pairs: list[str]) -> dict:
    """``--set train.steps=10 hparams.tau=0.5`` -> {"train.steps": 10, "hparams.tau": 0.5} (YAML-typed values)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {pair!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def add_env_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", type=Path, default=default_results_dir(),
                        help="results directory (default ./results)")
    parser.add_argument("--data-root", type=Path, default=default_data_root(),
                        help="datasets root (default $USS_BENCH_DATA or ./data)")
    parser.add_argument("--weights-dir", type=Path, default=default_weights_dir(),
                        help="directory of official weights files (default $USS_BENCH_WEIGHTS)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--crf-workers", type=int, default=0, help="CRF processes (0 = serial)")
    parser.add_argument("--defer-crf", action="store_true",
                        help="save per-image logits and leave the CRF to `uss-bench collect --crf-stage ...`")
    parser.add_argument("--checkpoint-every", type=int, default=200, help="training checkpoint period in steps")


def make_env(args: argparse.Namespace):
    from uss_bench.pipeline import RunEnv

    return RunEnv(
        results_dir=args.results,
        data_root=args.data_root,
        weights_dir=args.weights_dir,
        device=args.device,
        num_workers=args.num_workers,
        checkpoint_every=args.checkpoint_every,
        crf_workers=args.crf_workers,
        defer_crf=getattr(args, "defer_crf", False),
        force=getattr(args, "force", False),
    )


def handle(args: argparse.Namespace) -> int:
    from uss_bench.pipeline import expand_specs, preflight, run_inline
    from uss_bench.registry import UnknownNameError
    from uss_bench.results.summary import records_table

    try:
        specs = expand_specs(
            args.methods,
            args.datasets,
            backbones=args.backbones,
            seeds=[int(s) for s in args.seeds.split(",")],
            protocol=args.protocol,
            preset=args.preset,
            random_init=True if args.random_init else None,
            overrides=parse_overrides(args.set),
        )
    except (UnknownNameError, ValueError, FileNotFoundError) as exc:
        print(f"uss-bench run: error: {exc}", file=sys.stderr)
        return 2
    env = make_env(args)
    problems = preflight(specs, env)
    if problems:
        missing_datasets = sorted({p.split(":")[0] for p in problems if not p.startswith("missing DINO weights")})
        print("uss-bench run: inputs are missing:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        if not args.skip_missing:
            print("nothing was run; prepare the data (see `uss-bench datasets check`) or pass --skip-missing",
                  file=sys.stderr)
            return 2
        specs = [s for s in specs if s.dataset not in missing_datasets]
        if any(p.startswith("missing DINO weights") for p in problems):
            return 2
        if not specs:
            return 2
    from uss_bench.launch.dispatch import chosen_executor, launch

    executor = chosen_executor(args)
    if executor != "inline":  # local processes or Slurm arrays: uss_bench/launch/dispatch.py
        return launch(args, specs, env, executor)
    print(f"{len(specs)} run(s) -> {env.results_dir}/runs", file=sys.stderr)
    records = run_inline(specs, env, retry_failed=args.retry_failed)
    print(records_table(records))
    if any(r.get("spec", {}).get("random_init") for r in records):
        print("\nrandom init: backbone weights were random (no DINO weights); numbers test the pipeline, "
              "not the method.")
    failed = [r for r in records if r.get("status") not in ("completed", "running")]
    for rec in failed:
        err = rec.get("error", {})
        print(f"FAILED {rec['run_id']}: {err.get('type')}: {err.get('message')}", file=sys.stderr)
    # 3: some runs are still being computed by another process (as `run --wait` timing out)
    return 1 if failed else (3 if any(r.get("status") == "running" for r in records) else 0)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="train and evaluate a grid of methods x datasets x backbones x seeds")
    parser.add_argument("--methods", required=True, help="e.g. hp,ppap | all | 'st*'")
    parser.add_argument("--datasets", required=True, help="e.g. cocostuff27 | all | 'cocostuff*'")
    parser.add_argument("--backbones", default=None, help="e.g. vit-s8,vit-b8 | 'vit-s*' (default: the method card's)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--preset", default="default", help="default | smoke (tiny images and step counts)")
    parser.add_argument("--protocol", default=None, help="evaluation protocol (default: uss)")
    parser.add_argument("--random-init", action="store_true", help="random backbone weights (smoke runs; recorded)")
    parser.add_argument("--force", action="store_true", help="recompute completed runs")
    parser.add_argument("--skip-missing", action="store_true", help="run what is available, skip missing datasets")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides such as train.steps=100 hparams.tau=0.5 protocol.crf=false")
    add_env_arguments(parser)
    from uss_bench.launch.dispatch import add_launch_arguments

    add_launch_arguments(parser)
    parser.set_defaults(func=handle)
