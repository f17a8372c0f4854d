"""Resize / crop rules of the official repos, applied to uint8 images and integer labels.

STEGO, HP and PPAP resize the *image* with nearest-neighbour too (reference §0.1); that is the
``image_interpolation`` option. Labels are always resized with nearest-neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_INTERPOLATION = {
    "nearest": TF.InterpolationMode.NEAREST_EXACT,  # matches PIL.Image.NEAREST
    "bilinear": TF.InterpolationMode.BILINEAR,
    "bicubic": TF.InterpolationMode.BICUBIC,
}


@dataclass(frozen=True)
class SegTransform:
    """Shorter side -> ``res`` then a ``res`` x ``res`` crop ("center"), or a squash to (res, res) ("none")."""

    res: int
    crop: str = "center"
    image_interpolation: str = "nearest"

    def __post_init__(self) -> None:
        if self.crop not in ("center", "none"):
            raise ValueError(f"crop must be 'center' or 'none', got {self.crop!r}")
        if self.image_interpolation not in _INTERPOLATION:
            raise ValueError(f"image_interpolation must be one of {sorted(_INTERPOLATION)}")

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image: uint8 [C,H,W]; label: int64 [H,W] -> same types at the target size."""
        size: int | list[int] = self.res if self.crop == "center" else [self.res, self.res]
        image = TF.resize(image, size, interpolation=_INTERPOLATION[self.image_interpolation], antialias=True)
        label = TF.resize(label[None], size, interpolation=TF.InterpolationMode.NEAREST_EXACT)[0]
        if self.crop == "center":
            image = TF.center_crop(image, [self.res, self.res])
            label = TF.center_crop(label[None], [self.res, self.res])[0]
        return image, label


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,C,H,W] -> float in [0, 1]."""
    return images.float().div_(255.0)


def normalize(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Float images in [0, 1] -> ImageNet-normalised (channels beyond len(mean) are left as they are)."""
    c = len(mean)
    m = images.new_tensor(mean).view(1, c, 1, 1)
    s = images.new_tensor(std).view(1, c, 1, 1)
    out = images.clone()
    out[:, :c] = (images[:, :c] - m) / s
    return out


def upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, align_corners=False, as the official evaluation upsamples codes and logits."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
