"""FCN-ResNet50 of HSG: torchvision's ResNet-50 with DeepLab-v3 dilation and multi-grid (1, 2, 4).

HSG trains at output stride 16 and evaluates at output stride 8 with the same weights (reference
§3c: the test network sets stride 1 and dilation 2 in res4, dilation 4 in res5). Here one network
switches between the two: ``output_stride`` applies while training, ``test_output_stride`` in eval
mode. Official HSG trains from scratch (He-normal init), which is ``fcn-resnet50``; the
``fcn-resnet50-in1k`` variant starts from torchvision's ImageNet file in ``--weights-dir``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from uss_bench.backbones.vit import MissingWeightsError
from uss_bench.backbones.weights import Expected, load_weights_file, missing_weights, weights_file_problem
from uss_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from uss_bench.registry import BACKBONES

TORCHVISION_URL = "https://download.pytorch.org/models/"
MULTI_GRID = (1, 2, 4)
# output stride -> (res4 stride, res4 dilation, res5 base dilation); res5 stride is always 1
_GEOMETRY = {16: (2, 1, 2), 8: (1, 2, 4)}


class FCNResNet50(nn.Module):
    """ResNet-50 trunk (no pooling / fc) returning [B, 2048, H/os, W/os]."""

    dim = 2048
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, output_stride: int = 16, test_output_stride: int = 8) -> None:
        super().__init__()
        for stride in (output_stride, test_output_stride):
            if stride not in _GEOMETRY:
                raise ValueError(f"fcn-resnet50: output stride must be one of {sorted(_GEOMETRY)}, got {stride}")
        net = torchvision.models.resnet50(weights=None)  # He-normal init, as HSG's from-scratch training
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.output_stride = output_stride
        self.test_output_stride = test_output_stride
        self._geometry: int | None = None
        self._apply_stride(output_stride)

    def _apply_stride(self, output_stride: int) -> None:
        """Set strides and dilations in res4/res5 in place (the weights do not change shape)."""
        if self._geometry == output_stride:
            return
        s4, d4, d5 = _GEOMETRY[output_stride]
        for layer, stride, rates in ((self.layer3, s4, [d4] * len(self.layer3)),
                                     (self.layer4, 1, [d5 * g for g in MULTI_GRID])):
            for i, block in enumerate(layer):
                block.conv2.dilation = (rates[i], rates[i])
                block.conv2.padding = (rates[i], rates[i])
                block.conv2.stride = (stride, stride) if i == 0 else (1, 1)
                if i == 0 and block.downsample is not None:
                    block.downsample[0].stride = (stride, stride)
        self._geometry = output_stride

    def current_stride(self) -> int:
        return self.output_stride if self.training else self.test_output_stride

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: float [B,3,H,W] in [0,1] -> features [B,2048,H/os,W/os]."""
        self._apply_stride(self.current_stride())
        x = self.stem(normalize(images[:, :3], self.mean, self.std))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _load_torchvision_resnet(model: FCNResNet50, path: Path) -> None:
    state = load_weights_file(path, "torchvision ResNet-50")
    renamed = {}
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        head, _, rest = key.partition(".")
        stem = {"conv1": "stem.0", "bn1": "stem.1"}.get(head)
        renamed[f"{stem}.{rest}" if stem else key] = value
    model.load_state_dict(renamed, strict=True)


@dataclass(frozen=True)
class FCNResNetSpec:
    name: str
    weights_file: str | None  # torchvision ImageNet file; None = from scratch (official HSG)

    @property
    def weights_url(self) -> str | None:
        return None if self.weights_file is None else TORCHVISION_URL + self.weights_file

    def missing_weights(self, weights_dir: Path | None) -> str | None:
        if self.weights_file is None:
            return None
        return missing_weights("ImageNet", self.name, weights_dir, self.weights_file, self.weights_url,
                               "or use fcn-resnet50 (from scratch, as official HSG)")

    def expected_keys(self) -> Expected:
        return {"conv1.weight": (64, 3, 7, 7), "layer4.2.conv3.weight": (2048, 512, 1, 1)}

    def weights_problem(self, weights_dir: Path | None) -> str | None:
        """Missing, unreadable or not a ResNet-50: one line, before anything starts; None if usable."""
        if self.weights_file is None:
            return None
        return self.missing_weights(weights_dir) or weights_file_problem(
            Path(weights_dir) / self.weights_file, "torchvision ResNet-50", self.expected_keys())

    def build(self, weights_dir: Path | None = None, random_init: bool = False, output_stride: int = 16,
              test_output_stride: int = 8) -> FCNResNet50:
        model = FCNResNet50(output_stride, test_output_stride)
        if self.weights_file is not None and not random_init:
            problem = self.missing_weights(weights_dir)
            if problem:
                raise MissingWeightsError(problem)
            _load_torchvision_resnet(model, Path(weights_dir) / self.weights_file)
        return model


BACKBONES.add("fcn-resnet50", FCNResNetSpec("fcn-resnet50", None))
BACKBONES.add("fcn-resnet50-in1k", FCNResNetSpec("fcn-resnet50-in1k", "resnet50-0676ba61.pth"))
