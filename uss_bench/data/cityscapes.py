"""Cityscapes (fine) in torchvision's layout, as STEGO/HP/PPAP/PiCIE read it.

- cityscapes27 (STEGO, PiCIE): label = labelId - 7; ids 0-6 (unlabeled ... ground) and anything
  above 33 are ignored, so classes 0..26 are road ... bicycle.
- cityscapes19 (HSG, KITTI-STEP): the standard 19 trainIds (cityscapesScripts ``labels.py``), 255 ignored;
  read from ``*_gtFine_labelIds.png`` through the official id -> trainId table (default), or from
  cityscapesScripts' ``*_gtFine_labelTrainIds.png`` files with ``labels="trainIds"``.

Layouts: ``<dir>/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` with labels in
``<dir>/gtFine/<split>/<city>/<stem>_gtFine_labelIds.png`` (torchvision/STEGO) or under
``<dir>/annotations/gtFine/...`` (PiCIE). Items are sorted by city and file name; torchvision lists
them in ``os.listdir`` order, which only matters for index-based files such as kNN lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from uss_bench.data.base import DatasetError, Item
from uss_bench.data.layout import RealDataset, lut_map
from uss_bench.registry import DATASETS

FIRST_CLASS_ID = 7  # road
LAST_CLASS_ID = 33  # bicycle
# cityscapesScripts labels.py: labelId -> trainId (255 = ignore in evaluation)
LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                  26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


class Cityscapes(RealDataset):
    label_suffix: ClassVar[str] = "_gtFine_labelIds.png"

    def gt_root(self) -> Path:
        directory = self.dataset_dir()
        for path in (directory / "gtFine", directory / "annotations" / "gtFine"):
            if path.is_dir():
                return path
        raise DatasetError(
            f"missing label directory: expected {directory / 'gtFine'} (torchvision/STEGO) or "
            f"{directory / 'annotations' / 'gtFine'} (PiCIE); unzip gtFine_trainvaltest.zip into {directory}"
        )

    def suffix(self) -> str:
        return self.label_suffix

    def list_base_items(self, split: str) -> list[Item]:
        image_root = self.dataset_dir() / "leftImg8bit" / split
        if not image_root.is_dir():
            raise DatasetError(f"missing image directory: {image_root}; unzip leftImg8bit for split {split!r}")
        images = {p.name[: -len("_leftImg8bit.png")]: p for p in image_root.glob("*/*_leftImg8bit.png")}
        if not self.is_labelled(split):
            return [Item(stem, images[stem], None) for stem in sorted(images)]
        label_root = self.gt_root() / split
        suffix = self.suffix()
        labels = {p.name[: -len(suffix)]: p for p in label_root.glob(f"*/*{suffix}")}
        items = []
        for stem in sorted(set(images) | set(labels)):  # a file without its partner is named by `check`
            city = stem.split("_")[0]
            image = images.get(stem, image_root / city / f"{stem}_leftImg8bit.png")
            label = labels.get(stem, label_root / city / f"{stem}{suffix}")
            items.append(Item(stem, image, label))
        return items


@DATASETS.register("cityscapes27")
class Cityscapes27(Cityscapes):
    """Cityscapes, 27 classes: labelId - 7 (STEGO, PiCIE)."""

    name = "cityscapes27"

    def map_label(self, raw: np.ndarray) -> np.ndarray:
        label = raw.astype(np.int64) - FIRST_CLASS_ID
        label[(label < 0) | (label > LAST_CLASS_ID - FIRST_CLASS_ID)] = -1
        return label

    def raw_valid(self, raw: np.ndarray) -> np.ndarray:
        return raw <= LAST_CLASS_ID


TRAIN_TABLE = np.full(256, -1, dtype=np.int64)
for _label_id, _train_id in LABEL_TO_TRAIN.items():
    TRAIN_TABLE[_label_id] = _train_id


@DATASETS.register("cityscapes19")
class Cityscapes19(Cityscapes):
    """Cityscapes, the 19 standard trainIds, 255 ignored (HSG)."""

    name = "cityscapes19"
    option_names = ("labels",)

    def uses_train_ids(self) -> bool:
        source = self.options.get("labels", "labelIds")
        if source not in ("labelIds", "trainIds"):
            raise ValueError(f"cityscapes19: labels must be 'labelIds' or 'trainIds', got {source!r}")
        return source == "trainIds"

    def suffix(self) -> str:
        return "_gtFine_labelTrainIds.png" if self.uses_train_ids() else self.label_suffix

    def map_label(self, raw: np.ndarray) -> np.ndarray:
        if self.uses_train_ids():
            label = raw.astype(np.int64)
            label[(label < 0) | (label >= 19)] = -1
            return label
        return lut_map(raw, TRAIN_TABLE)

    def raw_valid(self, raw: np.ndarray) -> np.ndarray:
        return ((raw < 19) | (raw == 255)) if self.uses_train_ids() else raw <= LAST_CLASS_ID
