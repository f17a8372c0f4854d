"""PiCIE's ResNet-18 + simplified Panoptic FPN (``resnet18-fpn``; reference §1c).

torchvision ResNet-18 without avgpool/fc gives res2..res5 (strides 4-32, 64/128/256/512 channels).
The decoder has four 1x1 convs (with bias) to 128-d laterals and a bilinear top-down path:
o1 = L5(res5); o2 = up(o1) + L4(res4); o3 = up(o2) + L3(res3); o4 = up(o3) + L2(res2).
No 3x3 smoothing, no norm, no ReLU. Output: 128-d at stride 4. Inputs are ImageNet-normalised.

ImageNet weights come from torchvision's file in ``--weights-dir``; nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from uss_bench.backbones.vit import MissingWeightsError
from uss_bench.backbones.weights import Expected, load_weights_file, missing_weights, weights_file_problem
from uss_bench.registry import BACKBONES

TORCHVISION_URL = "https://download.pytorch.org/models/"


class ResNetFPN(nn.Module):
    """[B, 3, H, W] normalised images -> [B, 128, H/4, W/4]."""

    def __init__(self, arch: str = "resnet18", dim: int = 128) -> None:
        super().__init__()
        net = getattr(torchvision.models, arch)(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        # last BN of each stage = its output width (BasicBlock: bn2, Bottleneck: bn3)
        stages = (self.layer1, self.layer2, self.layer3, self.layer4)
        widths = [getattr(m[-1], "bn3", m[-1].bn2).num_features for m in stages]
        self.lateral = nn.ModuleList(nn.Conv2d(w, dim, 1) for w in widths)  # L2..L5
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        res2 = self.layer1(x)
        res3 = self.layer2(res2)
        res4 = self.layer3(res3)
        res5 = self.layer4(res4)
        out = self.lateral[3](res5)
        for lateral, skip in ((self.lateral[2], res4), (self.lateral[1], res3), (self.lateral[0], res2)):
            out = F.interpolate(out, size=skip.shape[-2:], mode="bilinear", align_corners=False) + lateral(skip)
        return out


def load_torchvision_trunk(model: ResNetFPN, path: Path) -> None:
    """torchvision ImageNet state dict -> the trunk; PiCIE loads with strict=False (fc is dropped)."""
    state = load_weights_file(path, "torchvision ResNet")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    trunk_missing = [k for k in missing if not k.startswith("lateral.")]
    if trunk_missing or unexpected:
        raise ValueError(f"{path}: not a torchvision ResNet state dict (missing {trunk_missing[:3]}, "
                         f"unexpected {unexpected[:3]})")


@dataclass(frozen=True)
class ResNetFPNSpec:
    name: str
    arch: str
    weights_file: str

    @property
    def weights_url(self) -> str:
        return TORCHVISION_URL + self.weights_file

    def missing_weights(self, weights_dir: Path | None, alternative: str = "or pass --random-init") -> str | None:
        return missing_weights("ImageNet", self.name, weights_dir, self.weights_file, self.weights_url,
                               alternative)

    def expected_keys(self) -> Expected:
        last = {"resnet18": ("layer4.1.conv2.weight", (512, 512, 3, 3)),
                "resnet50": ("layer4.2.conv3.weight", (2048, 512, 1, 1))}.get(self.arch)
        return {"conv1.weight": (64, 3, 7, 7), **({last[0]: last[1]} if last else {})}

    def weights_problem(self, weights_dir: Path | None, alternative: str = "or pass --random-init") -> str | None:
        """Missing, unreadable or not this ResNet: one line, before anything starts; None if usable."""
        return self.missing_weights(weights_dir, alternative) or weights_file_problem(
            Path(weights_dir) / self.weights_file, f"torchvision {self.arch}", self.expected_keys())

    def build(self, weights_dir: Path | None = None, random_init: bool = False, dim: int = 128) -> ResNetFPN:
        model = ResNetFPN(self.arch, dim)
        if not random_init:
            problem = self.missing_weights(weights_dir)
            if problem:
                raise MissingWeightsError(problem)
            load_torchvision_trunk(model, Path(weights_dir) / self.weights_file)
        return model


BACKBONES.add("resnet18-fpn", ResNetFPNSpec("resnet18-fpn", "resnet18", "resnet18-f37072fd.pth"))
