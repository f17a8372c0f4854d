"""COCO-Stuff-164k as STEGO/HP/PPAP/PiCIE/IIC read it: stuffthingmaps PNGs + IIC's curated image lists.

Raw labels are the 182 fine COCO-Stuff ids (0-90 things, 91-181 stuff) with 255 = unlabelled.
``FINE_TO_COARSE`` is IIC's ``fine_to_coarse_dict.pickle`` (reference §0.1 / STEGO §1a):
- cocostuff27: coarse index, train on ``Coco164kFull_Stuff_Coarse.txt``, val on ``..._7.txt``;
- cocostuff15: coarse - 12 (stuff only), things ignored, both splits on the ``_7`` lists;
- cocostuff3: sky, plant, ground (coarse 23, 22, 21 -> 0, 1, 2; STEGO's ``cocostuff3_coarse_classes``
  order) from ``Coco164kFew_Stuff_6.txt``, every other pixel ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from uss_bench.data.base import Item
from uss_bench.data.layout import RealDataset, lut_map, read_lines
from uss_bench.registry import DATASETS

# coarse index -> fine ids (the reference table, things 0-11 then stuff 12-26)
COARSE_TO_FINE: dict[int, list[int]] = {
    0: list(range(71, 77)),
    1: list(range(77, 83)),
    2: list(range(51, 61)),
    3: list(range(61, 71)),
    4: list(range(83, 91)),
    5: list(range(43, 51)),
    6: list(range(25, 33)),
    7: list(range(15, 25)),
    8: list(range(9, 15)),
    9: [0],
    10: list(range(33, 43)),
    11: list(range(1, 9)),
    12: [101, 102],
    13: [100, 113, 114, 115, 116, 117],
    14: [120, 121, 152, 169],
    15: [97, 106, 107, 109, 111, 122, 129, 132, 155, 160, 164],
    16: [99, 131, 138, 142],
    17: [91, 92, 103, 104, 108, 130, 136, 140, 151, 166, 167],
    18: list(range(170, 177)),
    19: [179, 180],
    20: [94, 95, 127, 150, 157, 165],
    21: [110, 124, 125, 135, 139, 143, 144, 146, 148, 153, 158],
    22: [93, 96, 118, 123, 128, 133, 141, 162, 168],
    23: [105, 156],
    24: [126, 134, 149, 159, 161, 181],
    25: [98, 112, 137, 145, 163],
    26: [119, 147, 154, 177, 178],
}
FINE_TO_COARSE = np.full(182, -1, dtype=np.int64)
for _coarse, _fines in COARSE_TO_FINE.items():
    FINE_TO_COARSE[_fines] = _coarse
assert (FINE_TO_COARSE >= 0).all(), "every fine id has a coarse class"

FIRST_STUFF = 12
COCO3_COARSE = (23, 22, 21)  # sky, plant, ground -> 0, 1, 2 (STEGO and IIC order)
UNLABELLED = 255


def _table(coarse_to_class: dict[int, int]) -> np.ndarray:
    """Raw value (0..255) -> class via the coarse index; 255 and unknown values -> -1."""
    table = np.full(256, -1, dtype=np.int64)
    for fine in range(182):
        table[fine] = coarse_to_class.get(int(FINE_TO_COARSE[fine]), -1)
    return table


class CocoStuff(RealDataset):
    """Shared COCO-Stuff reader; subclasses choose the lists and the label mapping."""

    lists: ClassVar[dict[str, str]]  # split -> curated list file name
    table: ClassVar[np.ndarray]
    split_dirs: ClassVar[dict[str, str]] = {"train": "train2017", "val": "val2017"}

    def list_file(self, split: str) -> Path:
        return self.dataset_dir() / "curated" / self.split_dirs[split] / self.lists[split]

    def list_base_items(self, split: str) -> list[Item]:
        directory = self.dataset_dir()
        sub = self.split_dirs[split]
        ids = read_lines(self.list_file(split), f"{self.name} {split} list (IIC curated list)")
        return [
            Item(i, directory / "images" / sub / f"{i}.jpg", directory / "annotations" / sub / f"{i}.png")
            for i in ids
        ]

    def map_label(self, raw: np.ndarray) -> np.ndarray:
        return lut_map(raw, self.table)

    def raw_valid(self, raw: np.ndarray) -> np.ndarray:
        return (raw < 182) | (raw == UNLABELLED)


@DATASETS.register("cocostuff27")
class CocoStuff27(CocoStuff):
    """COCO-Stuff-27: all 27 coarse classes (STEGO/HP/PPAP/PiCIE)."""

    name = "cocostuff27"
    # picie_train: PiCIE trains on the curated _7 train2017 list (data/coco_train_dataset.py, version 7)
    lists = {"train": "Coco164kFull_Stuff_Coarse.txt", "val": "Coco164kFull_Stuff_Coarse_7.txt",
             "picie_train": "Coco164kFull_Stuff_Coarse_7.txt"}
    split_dirs = {"train": "train2017", "val": "val2017", "picie_train": "train2017"}
    table = _table({c: c for c in range(27)})


@DATASETS.register("cocostuff15")
class CocoStuff15(CocoStuff):
    """COCO-Stuff-15 (IIC "COCO-Stuff"): stuff coarse classes only, things ignored."""

    name = "cocostuff15"
    lists = {"train": "Coco164kFull_Stuff_Coarse_7.txt", "val": "Coco164kFull_Stuff_Coarse_7.txt"}
    table = _table({c: c - FIRST_STUFF for c in range(FIRST_STUFF, 27)})


@DATASETS.register("cocostuff3")
class CocoStuff3(CocoStuff):
    """COCO-Stuff-3 (IIC): sky, plant, ground; everything else ignored."""

    name = "cocostuff3"
    lists = {"train": "Coco164kFew_Stuff_6.txt", "val": "Coco164kFew_Stuff_6.txt"}
    table = _table({c: i for i, c in enumerate(COCO3_COARSE)})
