"""Where the cards live and where data, weights and results go by default."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cards_dir(kind: str) -> Path:
    """``methods/`` or ``datasets/`` beside the package (override with USS_BENCH_HOME)."""
    return Path(os.environ.get("USS_BENCH_HOME", PROJECT_ROOT)) / kind


def load_card(kind: str, name: str) -> dict:
    path = cards_dir(kind) / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no {kind[:-1]} card for {name!r}: expected {path}")
    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def default_data_root() -> Path:
    return Path(os.environ.get("USS_BENCH_DATA", "data"))


def default_weights_dir() -> Path | None:
    value = os.environ.get("USS_BENCH_WEIGHTS")
    return Path(value) if value else None


def default_results_dir() -> Path:
    return Path(os.environ.get("USS_BENCH_RESULTS", "results"))
