"""Every check that can fail a run, done before any work: missing data and weights, one line each."""

from __future__ import annotations

from uss_bench.config import resolve
from uss_bench.data.build import dataset_problems
from uss_bench.pipeline.env import RunEnv
from uss_bench.registry import BACKBONES, METHODS
from uss_bench.spec import RunSpec


def preflight(specs: list[RunSpec], env: RunEnv) -> list[str]:
    """Every missing dataset file and weights file, one line each, before anything is submitted."""
    problems: list[str] = []
    seen: set[tuple] = set()
    for spec in specs:
        key = ("data", spec.dataset, spec.preset, spec.protocol)  # protocols may read other splits
        if key not in seen:
            seen.add(key)
            card = resolve(spec)
            train_split = card.protocol.train_split or card.dataset_card.get("train_split", "train")
            splits = (train_split, card.protocol.eval_split)
            found = dataset_problems(spec.dataset, env.data_root, tuple(dict.fromkeys(splits)), spec.preset)
            problems += [line for line in found if line not in problems]
        key = ("weights", spec.backbone, spec.random_init)
        if key not in seen and not spec.random_init:
            seen.add(key)
            checker = getattr(BACKBONES.get(spec.backbone), "missing_weights", None)
            message = checker(env.weights_dir) if checker else None
            if message:
                problems.append(message)
        method_check = getattr(METHODS.get(spec.method), "preflight_problems", None)  # optional method hook
        if method_check is not None:
            problems += [p for p in method_check(resolve(spec), env) if p not in problems]
    return problems
