"""Every check that can fail a run, done before any work: data, weights, sizes; one line each.

What is checked (the README's "Before a run starts" section says the same):
- the splits a run reads exist, have the card's (or the fixture's) counts, and a sample of their items
  decodes (``uss_bench.data.check.check_splits``, the check ``datasets check`` runs);
- the training split holds at least one batch of the resolved batch size;
- every weights file exists, opens with ``torch.load(weights_only=True)`` and holds the expected tensors.
"""

from __future__ import annotations

from uss_bench.config import resolve
from uss_bench.data.build import dataset_problems
from uss_bench.data.check import SAMPLE_PER_SPLIT, check_splits
from uss_bench.pipeline.env import RunEnv
from uss_bench.registry import BACKBONES, METHODS
from uss_bench.spec import RunSpec


class Problem(str):
    """One line for the user; ``dataset`` names the dataset it is about (None: weights or settings)."""

    dataset: str | None = None

    @classmethod
    def about(cls, text: str, dataset: str | None) -> Problem:
        problem = cls(text)
        problem.dataset = dataset
        return problem


def preflight(specs: list[RunSpec], env: RunEnv, sample: int = SAMPLE_PER_SPLIT) -> list[str]:
    """Every missing or unreadable dataset / weights file and every impossible size, one line each,
    before anything is submitted. The lines are :class:`Problem` strings."""
    problems: list[str] = []
    seen: set[tuple] = set()
    counts: dict[tuple[str, str, str], int] = {}
    for spec in specs:
        try:
            config = resolve(spec)
        except (ValueError, KeyError) as exc:
            problems.append(Problem.about(f"{spec.label()}: {exc}", None))
            continue
        # a protocol may train on and score other splits than the card's (iic, picie)
        train_split = config.protocol.train_split or config.dataset_card.get("train_split", "train")
        splits = tuple(dict.fromkeys((train_split, config.protocol.eval_split)))
        key = ("data", spec.dataset, spec.preset, splits)
        if key not in seen:
            seen.add(key)
            quick = dataset_problems(spec.dataset, env.data_root, splits, spec.preset)
            problems += [Problem.about(p, spec.dataset) for p in quick]
            if not quick:  # the files are there: decode a sample of each split the run reads
                report = check_splits(spec.dataset, env.data_root, splits, spec.preset, sample)
                problems += [Problem.about(f"{spec.dataset}: {p}", spec.dataset) for p in report.problems]
                counts.update({(spec.dataset, spec.preset, s): n for s, n in report.counts.items()})
        n_train = counts.get((spec.dataset, spec.preset, train_split))
        batch = config.train.get("batch_size")
        if n_train is not None and isinstance(batch, int) and n_train < batch:
            line = (f"{spec.dataset}: the training split {train_split!r} has {n_train} images, fewer than the "
                    f"batch size {batch} of {spec.method} (preset {spec.preset}); use more data or "
                    f"--set train.batch_size={max(1, n_train)}")
            if line not in problems:
                problems.append(Problem.about(line, spec.dataset))
        key = ("weights", spec.backbone, spec.random_init)
        if key not in seen and not spec.random_init:
            seen.add(key)
            backbone = BACKBONES.get(spec.backbone)
            # opens the file and checks its keys, not only that it exists
            checker = getattr(backbone, "weights_problem", None) or getattr(backbone, "missing_weights", None)
            message = checker(env.weights_dir) if checker else None
            if message:
                problems.append(Problem.about(message, None))
        method_check = getattr(METHODS.get(spec.method), "preflight_problems", None)  # optional method hook
        if method_check is not None:
            problems += [Problem.about(p, spec.dataset) for p in method_check(config, env) if p not in problems]
    return problems
