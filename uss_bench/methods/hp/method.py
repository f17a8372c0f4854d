"""HP: Leveraging Hidden Positives for Unsupervised Semantic Segmentation (Seong et al., CVPR 2023).

Frozen DINO ViT; STEGO's head (dim 512, 256 on Potsdam) with an EMA copy; a projection head.
Hidden positives are mined with per-anchor criteria from two reference pools: a fixed task-agnostic
pool of DINO features and a task-specific pool of EMA-head features renewed every ``renew_interval``
steps (one random patch per image each). The task-specific positives enter with weight lambda(t), a
linear ramp after the warm-up. Local hidden positives: the code mixed over each patch's 3x3
neighbourhood with last-block attention weights, gradient flowing to the neighbours. A photometric
consistency term ties the projections of an image and its colour-jittered copy.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from uss_bench.data.base import collate
from uss_bench.data.transforms import to_unit_float
from uss_bench.methods.base import MethodAdapter
from uss_bench.methods.hp.loss import (
    hidden_positive_loss,
    local_attention,
    local_mix,
    photometric_consistency,
)
from uss_bench.methods.stego.head import SegmentationHead, ema_update
from uss_bench.registry import METHODS


def flat(x: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B*h*w, C] rows in (image, y, x) order."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def lambda_ramp(step: int, warmup: int, total_steps: int) -> float:
    """lambda(t) = 0 up to the warm-up, then a linear ramp reaching 1 at the end of training."""
    if step <= warmup or total_steps <= warmup:
        return 0.0
    return (step - warmup) / (total_steps - warmup)


def photometric_augmentation() -> v2.Compose:
    """HP's img_aug: colour jitter, random greyscale, random blur; no geometric change."""
    return v2.Compose([
        v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([v2.GaussianBlur(kernel_size=(5, 5))], p=0.5),
    ])


@METHODS.register("hp")
class HiddenPositives(MethodAdapter):
    """HP (CVPR 2023): hidden positives from reference pools + local hidden positives."""

    name = "hp"

    def __init__(self, backbone, n_classes, hparams, context) -> None:
        super().__init__(backbone, n_classes, hparams, context)
        dim = int(self.hparam("dim"))
        self.head = SegmentationHead(backbone.dim, dim)
        self.ema_head = copy.deepcopy(self.head).requires_grad_(False)
        self.projection = nn.Linear(dim, dim)
        self.feature_dropout = nn.Dropout2d(0.1)
        pool_size = int(self.hparam("pool_size"))
        self.register_buffer("pool_ag", torch.zeros(pool_size, backbone.dim))  # task-agnostic, fixed
        self.register_buffer("pool_sp", torch.zeros(pool_size, dim))  # task-specific, renewed
        self.register_buffer("pools_ready", torch.tensor(False))  # a resumed run keeps its pools
        self.augment = photometric_augmentation()
        self.train_set = None

    @property
    def embed_dim(self) -> int:
        return self.head.linear_branch.out_channels

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images).patch)  # the online head, as HP evaluates output[1]

    # ---- reference pools ---------------------------------------------------------------------
    @torch.no_grad()
    def fill_pools(self, agnostic: bool) -> None:
        """One random patch per image of a shuffled pass over the train split (pool_size / batch images).

        Pool entries are dropped-out DINO features (agnostic) and dropped-out EMA-head codes (specific),
        L2-normalised. Rows stay zero when the split holds fewer images than the pool.
        """
        bs = self.context.batch_size
        size = self.pool_ag.shape[0]
        n_batches = min(math.ceil(size / bs), len(self.train_set) // bs)
        order = torch.randperm(len(self.train_set))
        pool_ag, pool_sp = torch.zeros_like(self.pool_ag), torch.zeros_like(self.pool_sp)
        for b in range(n_batches):
            ids = order[b * bs : (b + 1) * bs].tolist()
            images = to_unit_float(collate([self.train_set[i] for i in ids])["image"].to(self.pool_ag.device))
            f = self.backbone(images).patch
            code_ema = self.feature_dropout(self.ema_head(f))
            rows = torch.arange(len(ids), device=f.device)
            hw = f.shape[2] * f.shape[3]
            end = min(size, (b + 1) * bs) - b * bs
            pick = torch.randint(hw, (len(ids),)).to(f.device)
            pool_ag[b * bs : b * bs + end] = flat(self.feature_dropout(f)).view(len(ids), hw, -1)[rows, pick][:end]
            pick = torch.randint(hw, (len(ids),)).to(f.device)
            pool_sp[b * bs : b * bs + end] = flat(code_ema).view(len(ids), hw, -1)[rows, pick][:end]
        if agnostic:
            self.pool_ag.copy_(F.normalize(pool_ag, dim=1))
        self.pool_sp.copy_(F.normalize(pool_sp, dim=1))

    def on_train_start(self, train_set: torch.utils.data.Dataset) -> None:
        self.train_set = train_set
        if not bool(self.pools_ready):
            self.fill_pools(agnostic=True)
            self.pools_ready.fill_(True)

    # ---- training ------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, Any]:
        in_epoch = step % max(1, self.context.steps_per_epoch)
        if in_epoch % int(self.hparam("renew_interval")) == 0 and in_epoch != 0:
            if self.train_set is None:
                raise RuntimeError("hp: on_train_start was not called (the reference pools are empty)")
            self.fill_pools(agnostic=False)
        images = batch["image"]
        with torch.no_grad():
            feats = self.backbone(images, attn=True)
        f = feats.patch
        h, w = f.shape[-2:]
        code = self.head(f)
        with torch.no_grad():
            code_ema = self.ema_head(f)
            weights = local_attention(feats.attn_logits, h, w, float(self.hparams.get("local_sigma", 28.0)),
                                      self.backbone.prefix_tokens())
        code_mix = local_mix(code, weights)
        ema_update(self.head, self.ema_head, float(self.hparam("ema_m")))  # before the step: EMA lags by one
        z = F.normalize(self.projection(flat(code)), dim=1)
        z_mix = F.normalize(self.projection(flat(self.feature_dropout(code_mix))), dim=1)
        f_hat = F.normalize(flat(self.feature_dropout(f)), dim=1).detach()
        s_ema = F.normalize(flat(self.feature_dropout(code_ema)), dim=1)
        lam = lambda_ramp(step, int(self.hparam("warmup")), self.context.total_steps)
        sup = hidden_positive_loss(
            z, z_mix, f_hat, s_ema, self.pool_ag, self.pool_sp, lam=lam, rho=float(self.hparam("rho")),
            tau=float(self.hparam("tau")), patches_per_image=h * w,
            reweight=bool(self.hparams.get("reweighting", True)),
        )
        loss = sup["loss"]
        out: dict[str, Any] = {"loss_sup": sup["loss"].detach(), "positives": sup["positives"],
                               "lambda": torch.tensor(lam), "code": code}
        alpha = float(self.hparam("alpha"))
        if alpha > 0:
            augmented = torch.stack([self.augment(img) for img in images])
            with torch.no_grad():
                f_aug = self.backbone(augmented).patch
            z_aug = F.normalize(self.projection(flat(self.head(f_aug))), dim=1)
            consistency = photometric_consistency(z, z_aug)
            loss = loss + alpha * consistency
            out["loss_consistency"] = consistency.detach()
        out["loss"] = loss
        return out

    def param_groups(self) -> list[dict[str, Any]]:
        lr = float(self.hparams.get("lr", 5e-4))
        return [
            {"name": "head", "params": list(self.head.parameters()), "optimizer": "adamw", "lr": lr,
             "weight_decay": float(self.hparams.get("weight_decay", 0.1)), "clip": True},
            # The projection head has its own Adam and is not clipped (HP's head_optimizer).
            {"name": "projection", "params": list(self.projection.parameters()), "optimizer": "adam", "lr": lr,
             "weight_decay": 0.0, "clip": False},
        ]

    def load_official_checkpoint(self, path: Path) -> dict[str, Any]:
        from uss_bench.official_checkpoints import load_official

        return load_official(self, path)
