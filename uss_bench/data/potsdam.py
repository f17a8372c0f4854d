"""ISPRS Potsdam as IIC's ``potsdam_prepare.py`` wrote it (and STEGO's ``potsdam.zip`` ships it).

``<dir>/imgs/<id>.mat`` holds key ``img`` (200x200x4 uint8: R, G, B, IR) and ``<dir>/gt/<id>.mat`` key
``gt`` (200x200 ints 0..5); split lists ``labelled_train.txt``, ``labelled_test.txt``,
``unlabelled_train.txt``, ``all.txt`` hold one id per line.

``image`` is RGB by default, as STEGO/HP/PPAP use it; ``channels="rgbir"`` returns all four channels
for IIC (the transforms and the engine handle any channel count; the CRF uses the first three).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy.io import loadmat

from uss_bench.data.base import DatasetError, Item
from uss_bench.data.layout import RealDataset, lut_map, read_lines
from uss_bench.registry import DATASETS

SPLIT_FILES = {
    "train": ["labelled_train.txt"],
    "val": ["labelled_test.txt"],
    "unlabelled_train": ["unlabelled_train.txt"],
    "all": ["all.txt"],
}
# Potsdam-3 merge (IIC / STEGO): roads+cars, buildings+clutter, low vegetation+trees.
SIX_TO_THREE = {0: 0, 4: 0, 1: 1, 5: 1, 2: 2, 3: 2}
IGNORE_RAW = 255  # STEGO maps 255 -> -1; IIC's files hold only 0..5


def read_mat(path, key: str) -> np.ndarray:
    """One array from a .mat file; missing, corrupt or keyless files raise DatasetError naming the file."""
    if not path.is_file():
        raise DatasetError(f"missing file: {path}")
    try:
        data = loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError/OSError/TypeError/MatReadError on damaged files
        raise DatasetError(f"corrupt or truncated .mat file {path}: {type(exc).__name__}: {exc}") from exc
    if key not in data:
        raise DatasetError(f"{path} has no key {key!r} (keys: {sorted(k for k in data if not k.startswith('__'))})")
    return np.asarray(data[key])


class Potsdam(RealDataset):
    table: ClassVar[np.ndarray]
    option_names = ("channels",)

    def list_base_items(self, split: str) -> list[Item]:
        directory = self.dataset_dir()
        ids = [i for name in SPLIT_FILES[split] for i in read_lines(directory / name, f"{self.name} split file")]
        labelled = self.is_labelled(split)
        return [
            Item(i, directory / "imgs" / f"{i}.mat", directory / "gt" / f"{i}.mat" if labelled else None)
            for i in ids
        ]

    def read_image(self, item: Item) -> np.ndarray:
        image = read_mat(item.image, "img")
        if image.ndim != 3 or image.shape[2] < 3:
            raise DatasetError(f"{item.image}: expected an HxWx4 RGB-IR image, got shape {image.shape}")
        channels = self.options.get("channels", "rgb")
        if channels not in ("rgb", "rgbir"):
            raise ValueError(f"{self.name}: channels must be 'rgb' or 'rgbir', got {channels!r}")
        image = image if channels == "rgbir" else image[..., :3]
        return np.ascontiguousarray(image.astype(np.uint8, copy=False))

    def read_raw_label(self, item: Item) -> np.ndarray | None:
        return None if item.label is None else read_mat(item.label, "gt")

    def map_label(self, raw: np.ndarray) -> np.ndarray:
        return lut_map(raw, self.table)

    def raw_valid(self, raw: np.ndarray) -> np.ndarray:
        return ((raw >= 0) & (raw < 6)) | (raw == IGNORE_RAW)


@DATASETS.register("potsdam")
class Potsdam6(Potsdam):
    """Potsdam, 6 classes (IIC "Potsdam")."""

    name = "potsdam"
    table = np.array([0, 1, 2, 3, 4, 5], dtype=np.int64)


@DATASETS.register("potsdam3")
class Potsdam3(Potsdam):
    """Potsdam-3: roads+cars, buildings+clutter, vegetation+trees (STEGO's "potsdam")."""

    name = "potsdam3"
    table = np.array([SIX_TO_THREE[v] for v in range(6)], dtype=np.int64)
