"""Over-segmentations: HSG's only training signal besides the images (reference §3a).

``ucm``: precomputed OWT-UCM region maps (official layout: one PNG of region ids per image, e.g.
``VOC2012/rf_0.25_48/<id>.png`` or ``seginst/pmi_0.05/<name>.png``), read from ``ucm_dir`` (absolute,
or relative to the data root) and resized/cropped like the training images (nearest, shorter side
-> train_res, centre crop). The official maps come from MATLAB (SE/PMI edges -> OWT -> UCM), which
uss-bench cannot run, so without them a documented scikit-image substitute is computed from the
image itself: ``felzenszwalb`` (graph-based, Felzenszwalb & Huttenlocher 2004, cited by HSG) or
``slic`` superpixels. The choice is the ``oversegmentation.source`` hyper-parameter, so every record
states which one a run used.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

SOURCES = ("ucm", "felzenszwalb", "slic")


def relabel(regions: np.ndarray) -> np.ndarray:
    """Region ids -> consecutive 0..R-1 (negative ids stay -1 = ignore)."""
    out = np.full(regions.shape, -1, dtype=np.int64)
    keep = regions >= 0
    _, inverse = np.unique(regions[keep], return_inverse=True)
    out[keep] = inverse
    return out


def read_region_png(path: Path) -> np.ndarray:
    from PIL import Image

    array = np.asarray(Image.open(path))
    if array.ndim == 3:  # colour-coded ids
        array = array[..., 0].astype(np.int64) * 65536 + array[..., 1].astype(np.int64) * 256 + array[..., 2]
    return array.astype(np.int64)


class OverSegmenter:
    """images (uint8 [B,3,H,W]) + ids -> region maps (int64 [B,H,W], consecutive ids per image)."""

    def __init__(self, settings: dict[str, Any], data_root: Path | None, train_res: int,
                 cache_size: int = 4096) -> None:
        self.source = settings.get("source", "felzenszwalb")
        if self.source not in SOURCES:
            raise ValueError(f"hsg: oversegmentation.source must be one of {SOURCES}, got {self.source!r}")
        self.settings = dict(settings)
        self.train_res = train_res
        self.ucm_dir: Path | None = None
        if self.source == "ucm":
            if not settings.get("ucm_dir"):
                raise ValueError("hsg: oversegmentation.source=ucm needs oversegmentation.ucm_dir (the OWT-UCM PNGs)")
            ucm_dir = Path(settings["ucm_dir"])
            self.ucm_dir = ucm_dir if ucm_dir.is_absolute() or data_root is None else Path(data_root) / ucm_dir
            if not self.ucm_dir.is_dir():
                raise FileNotFoundError(f"hsg: OWT-UCM directory not found: {self.ucm_dir} (oversegmentation.ucm_dir)")
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.cache_size = cache_size

    def __call__(self, images: torch.Tensor, ids: list[str]) -> torch.Tensor:
        maps = [self._one(images[i], ids[i]) for i in range(images.shape[0])]
        return torch.from_numpy(np.stack(maps)).to(images.device)

    def _one(self, image: torch.Tensor, image_id: str) -> np.ndarray:
        key = f"{image_id}:{tuple(image.shape)}"
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        regions = self._ucm(image_id, tuple(image.shape[-2:])) if self.source == "ucm" else self._compute(image)
        self._cache[key] = regions
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return regions

    def _compute(self, image: torch.Tensor) -> np.ndarray:
        from skimage import segmentation

        rgb = image[:3].permute(1, 2, 0).cpu().numpy()
        s = self.settings
        if self.source == "felzenszwalb":
            regions = segmentation.felzenszwalb(rgb, scale=float(s.get("scale", 100)), sigma=float(s.get("sigma", 0.8)),
                                                min_size=int(s.get("min_size", 20)))
        else:
            regions = segmentation.slic(rgb, n_segments=int(s.get("n_segments", 48)),
                                        compactness=float(s.get("compactness", 10.0)), start_label=0)
        return relabel(regions)

    def _ucm(self, image_id: str, size: tuple[int, int]) -> np.ndarray:
        path = self.ucm_dir / f"{image_id}.png"
        if not path.is_file():
            raise FileNotFoundError(f"hsg: missing OWT-UCM region map {path} for image {image_id!r}")
        regions = torch.from_numpy(read_region_png(path))[None]
        regions = TF.resize(regions, self.train_res, interpolation=TF.InterpolationMode.NEAREST_EXACT)
        regions = TF.center_crop(regions, [self.train_res, self.train_res])[0]
        if tuple(regions.shape) != size:
            raise ValueError(f"hsg: region map {path} gives {tuple(regions.shape)} after resizing, images are {size}")
        return relabel(regions.numpy())
