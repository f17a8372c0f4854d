"""PASCAL VOC 2012 with the SBD augmentation (train_aug 10,582 / val 1,449), 21 classes, 255 ignored.

Layout: ``VOCdevkit/VOC2012/JPEGImages/<id>.jpg``; labels as index PNGs in the first folder found of
``SegmentationClassAug/`` (the usual train_aug distribution, grayscale ids), ``segcls/`` (HSG's name for the
same grayscale ids) or ``SegmentationClass/`` (VOC's own palette PNGs: their palette indices are the ids);
lists ``ImageSets/Segmentation/{train_aug,val,train}.txt`` with one id per line or deeplab-style
``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png`` lines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from uss_bench.data.base import DatasetError, Item
from uss_bench.data.layout import RealDataset, read_lines
from uss_bench.registry import DATASETS

LABEL_DIRS = ("SegmentationClassAug", "segcls", "SegmentationClass")
N_CLASSES = 21
IGNORE = 255


@DATASETS.register("voc12")
class VOC12(RealDataset):
    """PASCAL VOC 2012 (+SBD train_aug): 20 objects + background."""

    name = "voc12"

    def label_dir(self) -> Path:
        directory = self.dataset_dir()
        for name in LABEL_DIRS:
            if (directory / name).is_dir():
                return directory / name
        raise DatasetError(
            f"missing label directory: expected {directory / LABEL_DIRS[0]} (or {', '.join(LABEL_DIRS[1:])}); "
            f"unzip SegmentationClassAug.zip into {directory}"
        )

    def list_base_items(self, split: str) -> list[Item]:
        directory = self.dataset_dir()
        lines = read_lines(directory / "ImageSets" / "Segmentation" / f"{split}.txt", f"voc12 {split} list")
        ids = [Path(line.split()[0]).stem for line in lines]
        labels = self.label_dir()
        return [Item(i, directory / "JPEGImages" / f"{i}.jpg", labels / f"{i}.png") for i in ids]

    def map_label(self, raw: np.ndarray) -> np.ndarray:
        label = raw.astype(np.int64)
        label[(label < 0) | (label >= N_CLASSES)] = -1
        return label

    def raw_valid(self, raw: np.ndarray) -> np.ndarray:
        return (raw < N_CLASSES) | (raw == IGNORE)
