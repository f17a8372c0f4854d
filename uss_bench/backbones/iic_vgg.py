"""IIC's SegmentationNet10a trunk (``vgg-iic``; reference §2c).

VGG-style: 3x3 convs, stride 1, padding 1, no bias, BatchNorm + ReLU:
conv64 -> conv128 -> maxpool 2x2 -> conv256 -> conv256 -> conv512 (dilation 2) -> conv512 (dilation 2).
The dilated convs keep padding 1 (as the official code does), so each one shrinks the map by 2 px:
128 -> 64 after the pool -> 62 -> 60. IIC trains from scratch (Kaiming-normal fan-in init, BN gamma 1,
beta 0), so there is no weights file: ``build`` always returns a fresh network.

``width`` scales every channel count (1.0 = official); only the CPU smoke presets lower it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from uss_bench.registry import BACKBONES

# (out_channels, dilation) per conv; "M" = 2x2 max-pool
CONFIG: tuple = ((64, 1), (128, 1), "M", (256, 1), (256, 1), (512, 2), (512, 2))


class SegmentationNet10aTrunk(nn.Module):
    """[B, in_channels, H, W] -> [B, 512*width, H/2 - 4, W/2 - 4]."""

    def __init__(self, in_channels: int, width: float = 1.0, batchnorm_track: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for entry in CONFIG:
            if entry == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out, dilation = entry
            out = max(1, int(round(out * width)))
            # padding stays 1 even when dilated: the official "30x30 receptive field" net shrinks here
            layers += [nn.Conv2d(c, out, 3, stride=1, padding=1, dilation=dilation, bias=False),
                       nn.BatchNorm2d(out, track_running_stats=batchnorm_track), nn.ReLU(inplace=True)]
            c = out
        self.features = nn.Sequential(*layers)
        self.dim = c
        self.in_channels = in_channels
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"vgg-iic expects {self.in_channels} input channels, got {x.shape[1]}")
        return self.features(x)


def init_weights(module: nn.Module) -> None:
    """IIC's _initialize_weights: Kaiming-normal (fan-in, ReLU) convs, BN weight 1 / bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@dataclass(frozen=True)
class IICVGGSpec:
    name: str = "vgg-iic"

    def missing_weights(self, weights_dir: Path | None) -> str | None:
        return None  # trained from scratch, as in the paper

    def build(self, weights_dir: Path | None = None, random_init: bool = True, in_channels: int = 5,
              width: float = 1.0, batchnorm_track: bool = True) -> SegmentationNet10aTrunk:
        return SegmentationNet10aTrunk(in_channels, width, batchnorm_track)


BACKBONES.add("vgg-iic", IICVGGSpec())
