"""ImageNet-S (LUSSeg/ImageNet-S ``datapreparation``): ImageNetS{50,300,919} folders of ImageNet images.

Layout per variant: ``train/<wnid>/*.JPEG`` (unlabelled), ``train-semi/<wnid>/*.JPEG`` with
``train-semi-segmentation/<wnid>/*.png`` (10 labelled images per class, used by distance matching),
``validation/<wnid>/*.JPEG`` with ``validation-segmentation/<wnid>/*.png``, ``test/<wnid>/*.JPEG``
(ground truth hidden behind the online server).

Label PNGs are RGB: id = R + 256 * G (B = 0); 0 = background ("other"), 1..K = the categories in the
order of ``ImageNetS_categories_im{K}.txt`` (sorted wnids), 1000 = ignore. Classes here are therefore
K + 1 with background first, and the harness label equals the ImageNet-S id.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from uss_bench.data.base import DatasetError, Item
from uss_bench.data.layout import RealDataset
from uss_bench.registry import DATASETS

IGNORE_ID = 1000
# split -> (image folder, segmentation folder or None)
FOLDERS = {
    "train": ("train", None),
    "train-semi": ("train-semi", "train-semi-segmentation"),
    "val": ("validation", "validation-segmentation"),
    "test": ("test", None),
    "train-full": ("train-full", None),  # 919 only: all 1000 ImageNet classes
}


def decode_rgb_label(rgb: np.ndarray) -> np.ndarray:
    """RGB label PNG -> ids R + 256 G (int64); a single-channel PNG is taken as the ids themselves."""
    if rgb.ndim == 2:
        return rgb.astype(np.int64)
    return rgb[..., 0].astype(np.int64) + 256 * rgb[..., 1].astype(np.int64)


def encode_rgb_label(ids: np.ndarray) -> np.ndarray:
    """ids -> RGB uint8 (R = id mod 256, G = id div 256, B = 0), the format of GT and submissions."""
    ids = ids.astype(np.int64)
    out = np.zeros((*ids.shape, 3), dtype=np.uint8)
    out[..., 0] = ids % 256
    out[..., 1] = ids // 256
    return out


class ImageNetS(RealDataset):
    n_categories: ClassVar[int]

    def list_base_items(self, split: str) -> list[Item]:
        image_dir_name, seg_dir_name = FOLDERS[split]
        directory = self.dataset_dir()
        image_root = directory / image_dir_name
        if not image_root.is_dir():
            raise DatasetError(f"missing image directory: {image_root}; {self.card.get('missing_hint', '')}")
        images = {
            f"{p.parent.name}/{p.stem}": p for p in image_root.glob("*/*") if p.suffix.lower() in (".jpeg", ".jpg")
        }
        if seg_dir_name is None:
            return [Item(key, images[key], None) for key in sorted(images)]
        seg_root = directory / seg_dir_name
        if not seg_root.is_dir():
            raise DatasetError(
                f"missing segmentation directory: {seg_root}; unzip the ImageNetS{self.n_categories} annotation "
                f"archive (datapreparation_anno.sh) into {directory}"
            )
        labels = {f"{p.parent.name}/{p.stem}": p for p in seg_root.glob("*/*.png")}
        items = []
        for key in sorted(set(images) | set(labels)):  # an orphan on either side is named by `check`
            image = images.get(key, image_root / f"{key}.JPEG")
            items.append(Item(key, image, labels.get(key, seg_root / f"{key}.png")))
        return items

    def quick_items(self, split: str) -> list[Item] | None:
        if split != "train" or self.is_fixture():
            return self.list_items(split)
        # ImageNet's train folders hold up to 1.2 M files: check the class folders only.
        root = self.dataset_dir() / "train"
        if not root.is_dir():
            raise DatasetError(f"missing image directory: {root}; {self.card.get('missing_hint', '')}")
        n_folders = sum(1 for p in root.iterdir() if p.is_dir())
        if n_folders < self.n_categories:
            raise DatasetError(f"{root} has {n_folders} class folders, expected {self.n_categories}")
        return None

    def read_raw_label(self, item: Item) -> np.ndarray | None:
        raw = super().read_raw_label(item)
        return None if raw is None else decode_rgb_label(raw)

    def map_label(self, raw: np.ndarray) -> np.ndarray:
        label = raw.astype(np.int64, copy=True)
        label[(label < 0) | (label > self.n_categories)] = -1  # 1000 = ignore
        return label

    def raw_valid(self, raw: np.ndarray) -> np.ndarray:
        return ((raw >= 0) & (raw <= self.n_categories)) | (raw == IGNORE_ID)



@DATASETS.register("imagenet-s50")
class ImageNetS50(ImageNetS):
    """ImageNet-S-50: 50 categories + background."""

    name = "imagenet-s50"
    n_categories = 50


@DATASETS.register("imagenet-s300")
class ImageNetS300(ImageNetS):
    """ImageNet-S-300: 300 categories + background."""

    name = "imagenet-s300"
    n_categories = 300


@DATASETS.register("imagenet-s919")
class ImageNetS919(ImageNetS):
    """ImageNet-S-919: 919 categories + background."""

    name = "imagenet-s919"
    n_categories = 919
