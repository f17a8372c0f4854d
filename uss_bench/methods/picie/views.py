"""PiCIE's two views (reference §1a): photometric P1, P2 and the geometric transform G, sampled once per
(epoch, image) so that the clustering passes and the training pass see the same augmentations.

Photometric, per view, in the official order, each with its own coin: brightness, contrast, saturation
(factors U[0.7, 1.3], p 0.8), hue (U[-0.1, 0.1], p 0.8), grayscale (p 0.2; never applied in the official
code, quirk Q1), Gaussian blur (p 0.5; the official radius is m (u - 0.5) + 0.1 with m = 3.8 on the coin's
own draw u < 0.5, quirk Q2; PIL effectively uses |radius|).
G: a square crop of side s L, s ~ U[min_scale, 1], offsets (round((L - sL) a), round((L - sL) b)) with
a, b ~ U[0, 1], bilinearly resized back, then a horizontal flip with p 0.5. View 1 applies G to the image,
view 2 to its feature map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

JITTER_P, GREY_P, BLUR_P, FLIP_P = 0.8, 0.2, 0.5, 0.5
BLUR_MIN, BLUR_MAX = 0.1, 2.0


@dataclass(frozen=True)
class ViewSettings:
    jitter: float = 0.3  # brightness/contrast/saturation factor range 1 +- jitter
    hue: float = 0.1
    grayscale: bool = True  # False reproduces quirk Q1 (the "grey"/"gray" typo: never applied)
    blur_rule: str = "official"  # official (quirk Q2) | uniform (sigma ~ U[0.1, 2] as MoCo v2 intends)
    min_scale: float = 0.5


def _generator(seed: int, epoch: int, index: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 10_000_019 + index) * 7 + stream)


def _blur_sigma(u: float, rule: str, g: torch.Generator) -> float:
    if rule == "official":
        m = (BLUR_MAX - BLUR_MIN) / (1.0 - BLUR_P)
        return abs(m * (u - BLUR_P) + BLUR_MIN)
    return float(torch.empty(1).uniform_(BLUR_MIN, BLUR_MAX, generator=g))


def photometric(image: torch.Tensor, seed: int, epoch: int, index: int, view: int, s: ViewSettings) -> torch.Tensor:
    """One image [3, H, W] float in [0, 1] -> its view-``view`` photometric augmentation."""
    g = _generator(seed, epoch, index, view)
    draws = torch.rand(10, generator=g, dtype=torch.float64).tolist()
    lo, hi = max(0.0, 1 - s.jitter), 1 + s.jitter
    factor = [lo + (hi - lo) * draws[5 + i] for i in range(3)]
    if draws[0] < JITTER_P:
        image = TF.adjust_brightness(image, factor[0])
    if draws[1] < JITTER_P:
        image = TF.adjust_contrast(image, factor[1])
    if draws[2] < JITTER_P:
        image = TF.adjust_saturation(image, factor[2])
    if draws[3] < JITTER_P:
        image = TF.adjust_hue(image, -s.hue + 2 * s.hue * draws[8])
    if s.grayscale and draws[4] < GREY_P:
        image = TF.rgb_to_grayscale(image, num_output_channels=3)
    if draws[9] < BLUR_P:
        sigma = _blur_sigma(draws[9], s.blur_rule, g)
        if sigma > 1e-3:
            kernel = 2 * math.ceil(3 * sigma) + 1
            image = TF.gaussian_blur(image, [kernel, kernel], [sigma, sigma])
    return image


def geometric_params(seed: int, epoch: int, index: int, s: ViewSettings) -> tuple[float, float, float, bool]:
    """(scale, row fraction, column fraction, flip) of G for one image."""
    g = _generator(seed, epoch, index, 2)
    u = torch.rand(4, generator=g, dtype=torch.float64).tolist()
    return s.min_scale + (1 - s.min_scale) * u[0], u[1], u[2], u[3] < FLIP_P


def geometric(x: torch.Tensor, params: list[tuple[float, float, float, bool]], size: int) -> torch.Tensor:
    """Apply G per item of ``x`` [B, C, L, L] (image or feature map) and resize to ``size``."""
    out = []
    for item, (scale, a, b, flip) in zip(x, params):
        full = item.shape[-1]
        side = int(scale * full)
        top, left = int(round((full - side) * a)), int(round((full - side) * b))
        crop = item[None, :, top : top + side, left : left + side]
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)
        out.append(crop.flip(-1) if flip else crop)
    return torch.cat(out)
