"""Machine-local settings of a run (paths, device, workers): never part of a run's identity."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from uss_bench.paths import default_data_root, default_results_dir, default_weights_dir


@dataclass
class RunEnv:
    """Machine-local settings: not part of a run's identity."""

    results_dir: Path = field(default_factory=default_results_dir)
    data_root: Path = field(default_factory=default_data_root)
    weights_dir: Path | None = field(default_factory=default_weights_dir)
    device: str = "auto"
    num_workers: int = 0
    checkpoint_every: int = 200
    crf_workers: int = 0
    defer_crf: bool = False  # save logits; the CRF runs later as a CPU stage (launch/crf_stage.py)
    force: bool = False

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)
