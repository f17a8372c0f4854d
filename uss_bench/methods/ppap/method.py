"""PPAP: Progressive Proxy Anchor Propagation for Unsupervised Semantic Segmentation (Seong et al., ECCV 2024).

Two streams on one frozen DINO ViT. The guidance stream is the frozen network: its final features f
(with channel dropout, as the official code) pick positives and negatives. The task stream is a
trainable copy of the last block, run on the frozen block-11 tokens and followed by the frozen final
norm; its output is the segmentation code (dim = D), and a linear projection of it is the contrastive
embedding z. Positives come from proxy-anchor propagation; samples in each anchor's ambiguous zone
are left out of the negatives (:mod:`uss_bench.methods.ppap.loss`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from uss_bench.methods.base import MethodAdapter
from uss_bench.methods.ppap.loss import Propagation, ppap_loss
from uss_bench.registry import METHODS


@METHODS.register("ppap")
class ProxyAnchorPropagation(MethodAdapter):
    """PPAP (ECCV 2024): fine-tuned last block, proxy-anchor propagated positives."""

    name = "ppap"

    def __init__(self, backbone, n_classes, hparams, context) -> None:
        super().__init__(backbone, n_classes, hparams, context)
        self.block = copy.deepcopy(backbone.vit.blocks[-1]).requires_grad_(True)  # the "decoder"
        self.projection = nn.Linear(backbone.dim, backbone.dim)
        self.feature_dropout = nn.Dropout2d(0.1)
        self.propagation = Propagation(
            phi0=float(self.hparam("phi0")), psi0=float(self.hparam("psi0")),
            sigma_pos=float(self.hparam("sigma_pos")), sigma_amb=float(self.hparam("sigma_amb")),
            steps=int(self.hparam("prop_steps")),
        )

    @property
    def embed_dim(self) -> int:
        return self.backbone.dim

    def streams(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(code from the trainable last block [B,D,h,w], frozen final features f [B,D,h,w])."""
        with torch.no_grad():
            out = self.backbone(images, penultimate=True)
        vit = self.backbone.vit
        tokens = vit.norm(self.block(out.penultimate))[:, self.backbone.prefix_tokens():]
        b, d, h, w = out.patch.shape
        return tokens.transpose(1, 2).reshape(b, d, h, w), out.patch

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.streams(images)[0]

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        code, f = self.streams(batch["image"])
        d, h, w = code.shape[1:]
        z = F.normalize(self.projection(code.permute(0, 2, 3, 1).reshape(-1, d)), dim=1)
        f_hat = F.normalize(self.feature_dropout(f).permute(0, 2, 3, 1).reshape(-1, d), dim=1).detach()
        out = ppap_loss(
            z.float(), f_hat.float(), self.propagation, tau=float(self.hparam("tau")), patches_per_image=h * w,
            patch_split=int(self.hparam("patch_split")), block_patches=int(self.hparams.get("block_patches", 784)),
        )
        return {"loss": out["loss"], "num_positives": out["num_positives"], "num_negatives": out["num_negatives"],
                "code": code}

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"name": "net", "params": [*self.block.parameters(), *self.projection.parameters()],
                 "optimizer": str(self.hparams.get("optimizer", "adamw")), "lr": float(self.hparam("lr")),
                 "weight_decay": float(self.hparams.get("weight_decay", 0.0)), "clip": True}]

    def load_official_checkpoint(self, path: Path) -> dict[str, Any]:
        from uss_bench.official_checkpoints import load_official

        return load_official(self, path)
