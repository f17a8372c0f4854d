"""Over-segmentations: HSG's only training signal besides the images (reference §3a).

``ucm`` (the official signal): precomputed OWT-UCM region maps, one PNG of region ids per image
(e.g. ``VOC2012/rf_0.25_48/<id>.png``, ``seginst/pmi_0.05/<id>_leftImg8bit.png``), read from
``ucm_dir`` (absolute, or relative to the data root) as ``ucm_pattern`` (default ``{id}.png``) and
resized/cropped like the training images (nearest, shorter side -> train_res, centre crop).
``ucm_origin`` says where each dataset's maps come from; preflight names it when they are missing.
The maps are made in MATLAB (SE/PMI edges -> OWT -> UCM), which uss-bench cannot run; a user may
choose instead, explicitly and recorded in the run's hparams, a scikit-image substitute computed
from the image itself: ``felzenszwalb`` (Felzenszwalb & Huttenlocher 2004, cited by HSG; the
default only on synthetic data) or ``slic`` superpixels. There is no silent fallback.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

SOURCES = ("ucm", "felzenszwalb", "slic")
# Where the official maps come from (twke18/HSG README and tools/README.md).
UCM_SOURCES = {
    "voc12": "SE-OWT-UCM masks rf_0.25_48, released by twke18/HSG (README, 'Pascal VOC': Google Drive link)",
    "cocostuff": "SE-OWT-UCM masks seginst/rf_0.25_48 for MSCOCO train2017, released by twke18/HSG (README, 'MSCOCO')",
    "cityscapes": "PMI-OWT-UCM masks seginst/pmi_0.05, released by twke18/HSG (README, 'Cityscapes')",
}
UCM_GENERATE = ("no released maps: generate them with twke18/HSG tools/generate_pmi_owt_ucm.m or "
                "tools/generate_se_owt_ucm.m (MATLAB, tools/README.md)")


def ucm_origin(dataset: str) -> str:
    """Where a dataset's official OWT-UCM maps come from, in words."""
    for prefix, origin in UCM_SOURCES.items():
        if dataset.startswith(prefix):
            return origin
    return UCM_GENERATE


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


def resolve_ucm_dir(settings: dict[str, Any], data_root: Path | None) -> Path | None:
    if not settings.get("ucm_dir"):
        return None
    ucm_dir = Path(settings["ucm_dir"])
    return ucm_dir if ucm_dir.is_absolute() or data_root is None else Path(data_root) / ucm_dir


def ucm_problems(settings: dict[str, Any], data_root: Path | None, dataset: str) -> list[str]:
    """One line per reason the over-segmentation settings cannot run (for preflight), else []."""
    source = settings.get("source", "ucm")
    if source not in SOURCES:
        return [f"hsg: oversegmentation.source must be one of {', '.join(SOURCES)}, got {source!r}"]
    if source != "ucm":
        return []
    fallback = "or choose a recorded substitute with --set 'hparams.oversegmentation={source: felzenszwalb}'"
    ucm_dir = resolve_ucm_dir(settings, data_root)
    if ucm_dir is None:
        return [f"hsg on {dataset}: oversegmentation.source=ucm needs oversegmentation.ucm_dir (the OWT-UCM "
                f"region PNGs; {ucm_origin(dataset)}); name the directory in hparams.oversegmentation.ucm_dir, "
                f"{fallback}"]
    if not ucm_dir.is_dir():
        return [f"hsg on {dataset}: OWT-UCM directory not found: {ucm_dir} (oversegmentation.ucm_dir, files "
                f"{settings.get('ucm_pattern') or '{id}.png'}); {ucm_origin(dataset)}; {fallback}"]
    return []


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
            self.ucm_dir = resolve_ucm_dir(settings, data_root)
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
        path = self.ucm_dir / str(self.settings.get("ucm_pattern") or "{id}.png").format(id=image_id)
        if not path.is_file():
            raise FileNotFoundError(f"hsg: missing OWT-UCM region map {path} for image {image_id!r}")
        regions = torch.from_numpy(read_region_png(path))[None]
        regions = TF.resize(regions, self.train_res, interpolation=TF.InterpolationMode.NEAREST_EXACT)
        regions = TF.center_crop(regions, [self.train_res, self.train_res])[0]
        if tuple(regions.shape) != size:
            raise ValueError(f"hsg: region map {path} gives {tuple(regions.shape)} after resizing, images are {size}")
        return relabel(regions.numpy())


def ucm_check_line(dataset: str, data_root: Path, sample: int = 8) -> str | None:
    """``datasets check --ucm``: one line on HSG's OWT-UCM maps for a dataset (None when its HSG config
    uses no UCM maps, e.g. synthetic). Names the directory, the file pattern and where maps come from."""
    from uss_bench.config import resolve
    from uss_bench.data.build import build_dataset
    from uss_bench.data.transforms import SegTransform
    from uss_bench.spec import RunSpec

    config = resolve(RunSpec("hsg", dataset, "fcn-resnet50"))
    settings = dict(config.hparams.get("oversegmentation") or {})
    if settings.get("source", "ucm") != "ucm":
        return None
    problems = ucm_problems(settings, data_root, dataset)
    if problems:
        return f"{dataset} hsg-ucm: MISSING - {problems[0]}"
    ucm_dir = resolve_ucm_dir(settings, data_root)
    pattern = str(settings.get("ucm_pattern") or "{id}.png")
    try:
        train = build_dataset(dataset, data_root, config.dataset_card.get("train_split", "train"), SegTransform(64))
        ids = [train.items[i].id for i in range(min(sample, len(train.items)))]
    except Exception as exc:  # the dataset itself is reported by the regular check
        return f"{dataset} hsg-ucm: {ucm_dir} present; train ids not readable ({exc})"
    absent = [i for i in ids if not (ucm_dir / pattern.format(id=i)).is_file()]
    if absent:
        return (f"{dataset} hsg-ucm: MISSING - {len(absent)}/{len(ids)} sampled train ids have no map, e.g. "
                f"{ucm_dir / pattern.format(id=absent[0])}; {ucm_origin(dataset)}")
    return f"{dataset} hsg-ucm: ok {ucm_dir} ({pattern}; {len(ids)}/{len(ids)} sampled train ids)"
