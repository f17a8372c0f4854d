"""The method adapter contract.

A method module holds only its heads and losses. Everything generic (probes, optimisers, AMP,
clipping, checkpoints, evaluation, CRF, matching) lives in :mod:`uss_bench.train` and
:mod:`uss_bench.eval`. Labels never reach a method: the training loop strips them from the batch.

Contract
--------
- ``__init__(backbone, n_classes, hparams, context)``: build heads. ``backbone`` is the frozen
  feature extractor named by the spec (``None`` for ``backbone_family = "own"`` methods, which
  build their own network from ``context.backbone_name``).
- ``embed(images) -> [B, C, h, w]``: segmentation features; ``images`` are float in [0, 1].
- ``training_step(batch, step) -> dict``: named scalar losses, ``"loss"`` = total (omit it or
  return ``None`` when nothing of the method trains). An optional ``"code"`` entry ([B, C, h, w])
  hands the step's segmentation features to the probes and saves a second forward.
- ``param_groups() -> list[dict]``: ``{"params", "optimizer": "adam"|"adamw"|"sgd", "lr",
  "weight_decay", "clip"}``; one optimiser per group, as the official repos keep separate optimisers.
- Optional hooks: ``on_train_start(train_set)``, ``on_epoch_start(epoch, loader_factory)``,
  ``before_eval(train_set, protocol)`` (the runner calls it once before the final evaluation),
  ``cluster_logits(code_up) -> [B, K, H, W] | None``, ``load_official_checkpoint(path)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass
class MethodContext:
    """Run facts a method may need; none of them are labels."""

    dataset: str
    backbone_name: str
    n_classes: int
    batch_size: int
    total_steps: int
    steps_per_epoch: int
    train_res: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    data_root: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class MethodAdapter(nn.Module):
    name: ClassVar[str]
    backbone_family: ClassVar[str] = "vit"
    supported_backbones: ClassVar[tuple[str, ...]] = ("vit-s8", "vit-s16", "vit-b8", "vit-b16")

    def __init__(
        self, backbone: nn.Module | None, n_classes: int, hparams: dict[str, Any], context: MethodContext
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.n_classes = n_classes
        self.hparams = dict(hparams)
        self.context = context

    # ---- required -------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        raise NotImplementedError

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        raise NotImplementedError

    # ---- optional ---------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        return []

    def on_train_start(self, train_set: torch.utils.data.Dataset) -> None:
        """Called before the first step of every (re)start (kNN tables, reference pools, ...); state kept in
        buffers is restored on resume, so the hook must skip work that is already done."""

    def on_epoch_start(self, epoch: int, loader_factory: Any) -> None:
        """Called at the start of every epoch (PiCIE's k-means)."""

    @classmethod
    def dataset_options(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """Options for building the datasets of a run, e.g. IIC's ``{"channels": "rgbir"}`` on Potsdam."""
        return {}

    def before_eval(self, train_set: torch.utils.data.Dataset, protocol: Any) -> None:
        """Called by the runner once after training, before the final evaluation (PiCIE re-fits k-means)."""

    def cluster_logits(self, code: torch.Tensor) -> torch.Tensor | None:
        """Methods with their own cluster head return [B, K, H, W]; None means "use the cluster probe"."""
        return None

    def load_official_checkpoint(self, path: Path) -> None:
        raise NotImplementedError(f"{self.name} has no official checkpoint import")

    def hparam(self, key: str) -> Any:
        """A hyper-parameter that must be set by the card; a clear error otherwise."""
        if key not in self.hparams:
            raise KeyError(f"{self.name}: hyper-parameter {key!r} is not set by the method card or overrides")
        return self.hparams[key]
