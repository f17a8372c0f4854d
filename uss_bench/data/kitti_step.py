"""KITTI-STEP (DeepLab2 layout), scored on its 19 semantic classes in Cityscapes' trainId encoding.

Layout: ``images/{train,val,test}/<sequence>/<frame>.png`` and
``panoptic_maps/{train,val}/<sequence>/<frame>.png`` where the panoptic PNG is RGB with
R = semantic trainId (255 = void), G * 256 + B = instance id (unused here).
"""

from __future__ import annotations

import numpy as np

from uss_bench.data.base import DatasetError, Item
from uss_bench.data.layout import RealDataset
from uss_bench.registry import DATASETS

N_CLASSES = 19
VOID = 255


@DATASETS.register("kitti-step")
class KittiStep(RealDataset):
    """KITTI-STEP: 19 Cityscapes classes (trainIds), semantic channel of the panoptic maps."""

    name = "kitti-step"

    def list_base_items(self, split: str) -> list[Item]:
        directory = self.dataset_dir()
        image_root = directory / "images" / split
        if not image_root.is_dir():
            raise DatasetError(f"missing image directory: {image_root}; {self.card.get('missing_hint', '')}")
        images = {f"{p.parent.name}/{p.stem}": p for p in image_root.glob("*/*.png")}
        if not self.is_labelled(split):
            return [Item(key, images[key], None) for key in sorted(images)]
        label_root = directory / "panoptic_maps" / split
        if not label_root.is_dir():
            raise DatasetError(f"missing label directory: {label_root}; {self.card.get('missing_hint', '')}")
        labels = {f"{p.parent.name}/{p.stem}": p for p in label_root.glob("*/*.png")}
        return [
            Item(key, images.get(key, image_root / f"{key}.png"), labels.get(key, label_root / f"{key}.png"))
            for key in sorted(set(images) | set(labels))
        ]

    def read_raw_label(self, item: Item) -> np.ndarray | None:
        raw = super().read_raw_label(item)
        if raw is None:
            return None
        return raw[..., 0] if raw.ndim == 3 else raw  # semantic id lives in R

    def map_label(self, raw: np.ndarray) -> np.ndarray:
        label = raw.astype(np.int64)
        label[(label < 0) | (label >= N_CLASSES)] = -1
        return label

    def raw_valid(self, raw: np.ndarray) -> np.ndarray:
        return (raw < N_CLASSES) | (raw == VOID)
