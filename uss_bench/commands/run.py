"""``uss-bench run``: expand a grid of runs, check inputs up front, run them, print the table."""

from __future__ import annotations

import argparse
import logging
import os
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


# ---- request checks: every command-line value, before any data is generated or any job starts ----------

MAX_SEED = 2**32 - 1  # numpy's seed range; torch would take more, the run seeds both


class RequestError(ValueError):
    """A bad command-line value; printed as one line naming the option."""


def parse_seeds(text: str) -> list[int]:
    seeds = []
    for part in text.split(","):
        part = part.strip()
        try:
            seed = int(part)
        except ValueError:
            raise RequestError(f"--seeds {text!r}: {part!r} is not an integer (e.g. --seeds 0,1,2)") from None
        if not 0 <= seed <= MAX_SEED:
            raise RequestError(f"--seeds {text!r}: {seed} is outside 0..{MAX_SEED}")
        seeds.append(seed)
    return list(dict.fromkeys(seeds))


def check_device(device: str, on_this_host: bool = True) -> None:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; CUDA must exist here when the runs execute here."""
    kind, _, index = device.partition(":")
    if device in ("auto", "cpu") or (kind == "cuda" and (not index or index.isdigit())):
        if kind != "cuda" or not on_this_host:
            return
        import torch

        if not torch.cuda.is_available():
            raise RequestError(f"--device {device}: CUDA is not available on this machine "
                               f"(torch {torch.__version__}); use --device cpu or auto")
        if index and int(index) >= torch.cuda.device_count():
            raise RequestError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return
    raise RequestError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")


def check_results_dir(path: Path) -> None:
    """The results directory (or its nearest existing parent) must be a writable directory."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RequestError(f"--results {path}: is a file, not a directory")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise RequestError(f"--results {path}: {existing} is not a directory")
    if not _can_write(existing):
        what = "is" if existing == path else f"cannot be created: {existing} is"
        raise RequestError(f"--results {path}: {what} not writable")


def _can_write(directory: Path) -> bool:
    import tempfile

    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".uss-bench-write-test.")
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def check_env_arguments(args: argparse.Namespace, runs_here: bool = True) -> None:
    """The machine-local options shared by ``run`` and ``eval``."""
    for option in ("num_workers", "crf_workers", "checkpoint_every"):
        value = getattr(args, option, None)
        if value is not None and value < 0:
            raise RequestError(f"--{option.replace('_', '-')} {value}: must be 0 or more")
    check_device(args.device, on_this_host=runs_here)
    check_results_dir(args.results)


def check_launch_arguments(args: argparse.Namespace) -> str:
    """Executor, profile and --resource values; returns the executor. No job is started."""
    from uss_bench.launch import profiles
    from uss_bench.launch.dispatch import chosen_executor
    from uss_bench.launch.executors import LaunchError

    try:
        executor = chosen_executor(args)
        if args.profile:
            profiles.load_profile(args.profile)
        profiles.parse_overrides(args.resource)
    except (profiles.ProfileError, LaunchError) as exc:
        raise RequestError(str(exc)) from None
    if getattr(args, "timeout", 1) <= 0 or getattr(args, "poll", 1) <= 0:
        raise RequestError("--timeout and --poll must be positive numbers of seconds")
    return executor


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


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """Options of training runs only (`eval` trains nothing and runs its CRF inline)."""
    parser.add_argument("--checkpoint-every", type=int, default=200, help="training checkpoint period in steps")
    parser.add_argument("--defer-crf", action="store_true",
                        help="save per-image logits and leave the CRF to `uss-bench collect --crf-stage ...`")


def make_env(args: argparse.Namespace):
    from uss_bench.pipeline import RunEnv

    return RunEnv(
        results_dir=args.results,
        data_root=args.data_root,
        weights_dir=args.weights_dir,
        device=args.device,
        num_workers=args.num_workers,
        checkpoint_every=getattr(args, "checkpoint_every", 0),
        crf_workers=args.crf_workers,
        defer_crf=getattr(args, "defer_crf", False),
        force=getattr(args, "force", False),
    )


def handle(args: argparse.Namespace) -> int:
    from uss_bench.config import validate_specs
    from uss_bench.pipeline import expand_specs, preflight, run_inline
    from uss_bench.registry import UnknownNameError
    from uss_bench.results.summary import records_table

    try:  # every command-line value first: nothing is generated, started or written before this passes
        seeds = parse_seeds(args.seeds)
        executor = check_launch_arguments(args)
        check_env_arguments(args, runs_here=executor != "slurm")
        specs = expand_specs(
            args.methods,
            args.datasets,
            backbones=args.backbones,
            seeds=seeds,
            protocol=args.protocol,
            preset=args.preset,
            random_init=True if args.random_init else None,
            overrides=parse_overrides(args.set),
        )
        validate_specs(specs)  # --preset and --set (keys, types, ranges), from the cards only: no data yet
    except (UnknownNameError, ValueError, FileNotFoundError) as exc:
        print(f"uss-bench run: error: {exc}", file=sys.stderr)
        return 2
    env = make_env(args)
    problems = preflight(specs, env)
    if problems:
        # only dataset problems can be skipped; weights and sizes stop everything
        bad_datasets = {getattr(p, "dataset", None) for p in problems}
        stop = not args.skip_missing or None in bad_datasets
        if len(problems) == 1 and stop:
            print(f"uss-bench run: error: inputs are missing or unusable: {problems[0]}; nothing was run",
                  file=sys.stderr)
            return 2
        print("uss-bench run: inputs are missing or unusable:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        if stop:
            print("nothing was run; fix the above (see `uss-bench datasets check`)"
                  + ("" if None in bad_datasets else " or pass --skip-missing"), file=sys.stderr)
            return 2
        specs = [s for s in specs if s.dataset not in bad_datasets]
        if not specs:
            return 2
    from uss_bench.launch.dispatch import launch
    from uss_bench.results.report import refresh_report

    if executor != "inline":  # local processes or Slurm arrays: uss_bench/launch/dispatch.py
        code = launch(args, specs, env, executor)
        refresh_report(env.results_dir, env.data_root)
        return code
    print(f"{len(specs)} run(s) -> {env.results_dir}/runs", file=sys.stderr)
    records = run_inline(specs, env, retry_failed=args.retry_failed)
    print(records_table(records))
    refresh_report(env.results_dir, env.data_root)
    from uss_bench.launch.dispatch import failure_line, print_random_init_note

    print_random_init_note(specs)
    failed = [r for r in records if r.get("status") not in ("completed", "running")]
    for rec in failed:
        err = rec.get("error", {})
        print(f"FAILED {rec['run_id']}: {failure_line(err.get('type'), err.get('message'))}", file=sys.stderr)
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
    add_checkpoint_argument(parser)
    from uss_bench.launch.dispatch import add_launch_arguments

    add_launch_arguments(parser)
    parser.set_defaults(func=handle)
