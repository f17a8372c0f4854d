"""SAN's semantic-wise ViT (``san-vit``): a randomly initialised timm ViT, 6 blocks, patch 8.

SAN trains from scratch (no public weights, no code; reference §4), so the spec never needs a file.
The class-token head and the final MLP are dropped: the generator uses all patch tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from uss_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from uss_bench.registry import BACKBONES


class SanViT(nn.Module):
    """images [B,3,H,W] in [0,1] -> patch tokens [B, (H/p)*(W/p), dim] after the final norm."""

    def __init__(self, dim: int = 1024, depth: int = 6, heads: int = 16, patch_size: int = 8,
                 img_size: int = 128) -> None:
        super().__init__()
        self.vit = VisionTransformer(img_size=img_size, patch_size=patch_size, embed_dim=dim, depth=depth,
                                     num_heads=heads, num_classes=0, global_pool="", class_token=False,
                                     dynamic_img_size=True)
        self.dim, self.patch_size = dim, patch_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        h, w = images.shape[-2] // p * p, images.shape[-1] // p * p
        return self.vit.forward_features(normalize(images[:, :3, :h, :w], IMAGENET_MEAN, IMAGENET_STD))


@dataclass(frozen=True)
class SanViTSpec:
    name: str = "san-vit"

    def missing_weights(self, weights_dir: Path | None) -> str | None:
        return None  # random init is the paper's setting; there is nothing to download

    def build(self, weights_dir: Path | None = None, random_init: bool = True, **sizes: int) -> SanViT:
        return SanViT(**sizes)


BACKBONES.add("san-vit", SanViTSpec())
