"""From a selection (``--methods x --datasets x --backbones x --seeds``) to the grid of RunSpecs."""

from __future__ import annotations

from typing import Any

from uss_bench.paths import load_card
from uss_bench.registry import BACKBONES, DATASETS, METHODS, PROTOCOLS
from uss_bench.spec import RunSpec


def default_backbone(method: str) -> str:
    return load_card("methods", method).get("default_backbone", "vit-s8")


def expand_specs(
    methods: str,
    datasets: str,
    backbones: str | None = None,
    seeds: list[int] | None = None,
    protocol: str | None = None,
    preset: str = "default",
    random_init: bool | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[RunSpec]:
    """The grid methods x datasets x backbones x seeds; every name is checked before anything runs."""
    method_names = METHODS.select(methods)
    dataset_names = DATASETS.select(datasets)
    backbone_names = BACKBONES.select(backbones) if backbones else None
    if protocol is not None:
        PROTOCOLS.get(protocol)
    specs = []
    for method in method_names:
        cls = METHODS.get(method)
        for dataset in dataset_names:
            for backbone in backbone_names or [default_backbone(method)]:
                if backbone not in cls.supported_backbones:
                    if backbone_names is not None and len(backbone_names) > 1:
                        continue  # a wildcard over backbones keeps only those the method supports
                    raise ValueError(
                        f"method {method!r} does not run on backbone {backbone!r}; "
                        f"supported: {', '.join(cls.supported_backbones)}"
                    )
                for seed in seeds or [0]:
                    use_random = random_init if random_init is not None else _random_by_default(dataset)
                    specs.append(
                        RunSpec(
                            method=method,
                            dataset=dataset,
                            backbone=backbone,
                            seed=seed,
                            protocol=protocol or "uss",
                            preset=preset,
                            random_init=use_random,
                            overrides=dict(overrides or {}),
                        )
                    )
    return specs


def _random_by_default(dataset: str) -> bool:
    """Only the synthetic benchmark defaults to random-init backbones; real data never silently does."""
    return load_card("datasets", dataset).get("backbone_default") == "random-init"
