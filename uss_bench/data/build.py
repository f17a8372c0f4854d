"""Build datasets by registry name, and report what is missing before a sweep starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uss_bench.data.base import DatasetError, SegDataset
from uss_bench.data.transforms import SegTransform
from uss_bench.registry import DATASETS


def build_dataset(
    name: str,
    data_root: str | Path,
    split: str,
    transform: SegTransform | None,
    preset: str = "default",
    **options: Any,
) -> SegDataset:
    """``options`` go to the dataset class (e.g. ``channels="rgbir"`` for Potsdam's 4-channel images)."""
    cls = DATASETS.get(name)
    return cls(Path(data_root), split, transform=transform, preset=preset, **options)


def dataset_problems(name: str, data_root: str | Path, splits: tuple[str, ...], preset: str = "default") -> list[str]:
    """One line per problem (missing directory, missing list file, ...); empty when the data is usable."""
    cls = DATASETS.get(name)
    checker = getattr(cls, "problems", None)
    if checker is not None:
        return list(checker(Path(data_root), splits=splits, preset=preset))
    problems = []
    for split in splits:
        try:
            cls(Path(data_root), split, transform=None, preset=preset)
        except (DatasetError, FileNotFoundError) as exc:
            problems.append(f"{name}: {exc}")
    return problems
