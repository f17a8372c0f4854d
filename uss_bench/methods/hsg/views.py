"""HSG's multiview augmentation (reference §3a, ``SelfsupListDataset``), done on the batch.

Each image gives two independent views: random scale U[0.5, 1.5], padding (image with the
ImageNet mean, regions with -1 = ignore) and a random crop back to the training size, a random
mirror, ColorJitter(0.4, 0.4, 0.4, 0.1) with p = 0.8 and grayscale with p = 0.2 (blur is off, as in
the official config). The views are not pixel-aligned: they correspond through the shared
over-segmentation region ids of their source image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from uss_bench.data.transforms import IMAGENET_MEAN


@dataclass
class Views:
    images: torch.Tensor  # [V, 3, S, S] float in [0, 1]
    regions: torch.Tensor  # [V, S, S] region ids of the source image, -1 = padding
    source: torch.Tensor  # [V] index of the source image in the batch


@dataclass(frozen=True)
class ViewAugment:
    size: int
    n_views: int = 2
    scale: tuple[float, float] = (0.5, 1.5)
    flip: bool = True
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2

    def __call__(self, images: torch.Tensor, regions: torch.Tensor) -> Views:
        jitter = v2.RandomApply([v2.ColorJitter(*self.jitter)], p=self.jitter_p)
        gray = v2.RandomGrayscale(p=self.gray_p)
        out_images, out_regions, source = [], [], []
        for b in range(images.shape[0]):
            for _ in range(self.n_views):
                img, reg = self._geometry(images[b], regions[b])
                out_images.append(gray(jitter(img)).clamp(0, 1))
                out_regions.append(reg)
                source.append(b)
        return Views(torch.stack(out_images), torch.stack(out_regions), torch.tensor(source, device=images.device))

    def _geometry(self, image: torch.Tensor, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = float(torch.empty(1).uniform_(*self.scale))
        h, w = image.shape[-2:]
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        regions = F.interpolate(regions[None, None].float(), size=(nh, nw), mode="nearest")[0, 0].long()
        ph, pw = max(0, self.size - nh), max(0, self.size - nw)
        if ph or pw:
            mean = image.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
            canvas = mean.expand(3, nh + ph, nw + pw).clone()
            canvas[:, :nh, :nw] = image
            image = canvas
            regions = F.pad(regions, (0, pw, 0, ph), value=-1)
        top = int(torch.randint(0, image.shape[-2] - self.size + 1, (1,)))
        left = int(torch.randint(0, image.shape[-1] - self.size + 1, (1,)))
        image = image[:, top : top + self.size, left : left + self.size]
        regions = regions[top : top + self.size, left : left + self.size]
        if self.flip and bool(torch.rand(1) < 0.5):
            image, regions = image.flip(-1), regions.flip(-1)
        return image, regions
