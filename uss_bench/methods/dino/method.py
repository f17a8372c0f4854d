"""DINO baseline: frozen patch features; only the evaluation probes train.

This is the baseline row of every paper table ("DINO" in STEGO/HP/PPAP): the cluster probe is an
SGD spherical k-means on the raw features, the linear probe a 1x1 conv on them.
"""

from __future__ import annotations

from typing import Any

import torch

from uss_bench.methods.base import MethodAdapter
from uss_bench.registry import METHODS


@METHODS.register("dino")
class DinoBaseline(MethodAdapter):
    name = "dino"

    @property
    def embed_dim(self) -> int:
        return self.backbone.dim

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images).patch

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        return {"code": self.embed(batch["image"])}
