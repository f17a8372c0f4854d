"""The dataset contract: samples are ``{"image": uint8 [3,H,W], "label": int64 [H,W] (-1 = ignore), "id": str}``.

A dataset family subclasses :class:`SegDataset` and implements two small methods: list the items of a
split, and load one item as numpy arrays with labels already mapped to ``0..n_classes-1`` / ``-1``.
The base class owns the card, the transforms, and the clear errors (missing files, corrupt images,
size mismatches) so every family reports them the same way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from uss_bench.data.transforms import SegTransform
from uss_bench.paths import load_card


class DatasetError(RuntimeError):
    """A problem with files on disk; the message names the path."""


@dataclass(frozen=True)
class Item:
    id: str
    image: Path
    label: Path | None = None


def read_rgb(path: Path) -> np.ndarray:
    """Read an image as uint8 [H,W,3]; a missing or corrupt file raises DatasetError naming it."""
    if not path.is_file():
        raise DatasetError(f"missing image file: {path}")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetError(f"corrupt or truncated image {path}: {exc}") from exc


def read_png_array(path: Path) -> np.ndarray:
    """Read an index/label PNG as an integer array (mode kept: L, P, I or RGB)."""
    if not path.is_file():
        raise DatasetError(f"missing label file: {path}")
    try:
        with Image.open(path) as img:
            return np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetError(f"corrupt or truncated label {path}: {exc}") from exc


class SegDataset(torch.utils.data.Dataset):
    """Base class of every dataset family. Subclasses set ``name`` and implement the two hooks."""

    name: ClassVar[str]

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: SegTransform | None = None,
        preset: str = "default",
    ) -> None:
        self.card = load_card("datasets", self.name)
        self.classes: list[str] = list(self.card["classes"])
        self.root = Path(root)
        self.split = split
        self.preset = preset
        self.transform = transform
        if split not in self.split_names():
            raise DatasetError(f"{self.name}: unknown split {split!r}; known: {', '.join(self.split_names())}")
        self.items = self.list_items(split)
        if not self.items:
            raise DatasetError(f"{self.name}: split {split!r} is empty under {self.dataset_dir()}")

    # ---- hooks for subclasses -------------------------------------------------------------
    def dataset_dir(self) -> Path:
        """Directory of this dataset under the data root."""
        return self.root / self.card.get("directory", self.name)

    def list_items(self, split: str) -> list[Item]:
        raise NotImplementedError

    def load(self, item: Item) -> tuple[np.ndarray, np.ndarray]:
        """Return (image uint8 [H,W,3+], label int64 [H,W] with -1 = ignore)."""
        raise NotImplementedError

    # ---- shared behaviour -------------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def split_names(self) -> list[str]:
        return list(self.card.get("splits", {}))

    def __len__(self) -> int:
        return len(self.items)

    def at_file_size(self) -> SegDataset:
        """A view of this split that yields every file at its own size (no harness resize or crop),
        for protocols whose official inference starts from the original image (HSG's hsg-knn)."""
        view = copy.copy(self)
        view.transform = None
        return view

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        image, label = self.load(item)
        if image.shape[:2] != label.shape[:2]:
            raise DatasetError(
                f"image/label size mismatch: {item.image} is {image.shape[1]}x{image.shape[0]} "
                f"but {item.label} is {label.shape[1]}x{label.shape[0]}"
            )
        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        label_t = torch.from_numpy(label.astype(np.int64, copy=False))
        if self.transform is not None:
            image_t, label_t = self.transform(image_t, label_t)
        return {"image": image_t, "label": label_t, "id": item.id, "index": index}


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "label": torch.stack([s["label"] for s in samples]),
        "id": [s["id"] for s in samples],
        "index": torch.tensor([s["index"] for s in samples]),
    }
