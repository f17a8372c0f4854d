"""Shared machinery of the real benchmarks: find the dataset on disk, five-crop splits, fast problem checks.

Every real family reads the files exactly as the official repos left them (mostly STEGO's
``pytorch_data_dir``). A family implements four small hooks: ``list_base_items(split)``,
``read_image(item)``, ``read_raw_label(item)`` (the values as stored on disk, or None for unlabelled
images) and ``map_label(raw)`` (raw -> 0..n_classes-1 / -1), plus ``raw_valid(raw)`` for ``datasets check``.

A card split with ``union: [a, b, ...]`` lists the items of those splits in that order, each part
read with its own ``labelled`` flag (IIC scores curated train2017 + val2017, Potsdam labelled_train +
labelled_test, and trains on unlabelled_train + both).

Five-crop splits (``<split>_five_crop_<ratio>``) are the files STEGO's ``crop_datasets.py`` writes,
read from either place the official repos put them: ``<root>/cropped/`` (STEGO) or
``<dataset dir>/cropped/`` (HP/PPAP, whose ``data_path`` is the dataset directory itself).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from uss_bench.data.base import DatasetError, Item, SegDataset, read_png_array, read_rgb
from uss_bench.paths import load_card

CROP_SPLIT = re.compile(r"^(?P<base>.+)_(?P<kind>five)_crop_(?P<ratio>[0-9.]+)$")
FIXTURE_MANIFEST = "uss_bench_fixtures.json"


@dataclass(frozen=True)
class CropItem(Item):
    """One five-crop file pair; the PNG stores label + 1 (0 = ignore)."""


def crop_split(split: str) -> tuple[str, str, str] | None:
    """``train_five_crop_0.5`` -> ("train", "five", "0.5"); None for an ordinary split."""
    m = CROP_SPLIT.match(split)
    return (m["base"], m["kind"], m["ratio"]) if m else None


def _numeric_stem(path: Path) -> tuple[int, str]:
    return (int(path.stem), "") if path.stem.isdigit() else (1 << 62, path.stem)


def read_lines(path: Path, what: str) -> list[str]:
    """Non-empty stripped lines of a list file; a missing file raises DatasetError naming it."""
    if not path.is_file():
        raise DatasetError(f"missing {what}: {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


class RealDataset(SegDataset):
    """Base of the real benchmark families (see the module docstring)."""

    option_names: ClassVar[tuple[str, ...]] = ()  # dataset options a family accepts (e.g. Potsdam's channels)

    def __init__(self, root, split, transform=None, preset="default", **options: Any) -> None:
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            known = ", ".join(self.option_names) or "none"
            raise ValueError(f"{self.name}: unknown dataset option(s) {unknown}; known: {known}")
        self.options = options
        super().__init__(root, split, transform=transform, preset=preset)

    # ---- construction without listing (for check/prepare/preflight) -------------------------
    @classmethod
    def bare(cls, root: str | Path, preset: str = "default", **options: Any) -> RealDataset:
        obj = cls.__new__(cls)
        obj.card = load_card("datasets", cls.name)
        obj.classes = list(obj.card["classes"])
        obj.root = Path(root)
        obj.split = ""
        obj.preset = preset
        obj.transform = None
        obj.options = options
        obj.items = []
        return obj

    # ---- where the files are ---------------------------------------------------------------
    def candidate_dirs(self) -> list[Path]:
        names = [self.card.get("directory", self.name), *self.card.get("alternate_directories", [])]
        return [self.root / n for n in names]

    def dataset_dir(self) -> Path:
        candidates = self.candidate_dirs()
        for path in candidates:
            if path.is_dir():
                return path
        alternates = "".join(f" or {p}" for p in candidates[1:])
        raise DatasetError(
            f"dataset directory not found: expected {candidates[0]}{alternates}; {self.card.get('missing_hint', '')}"
        )

    def crop_dir(self, split: str) -> Path:
        base, kind, ratio = crop_split(split)
        name = f"{self.card.get('crop_name', self.name)}_{kind}_crop_{ratio}"
        stego = self.root / "cropped" / name
        candidates = [stego]
        with contextlib.suppress(DatasetError):
            candidates.append(self.dataset_dir() / "cropped" / name)  # HP/PPAP
        for path in candidates:
            if (path / "img" / base).is_dir():
                return path
        raise DatasetError(
            f"five-crop split {split!r} not prepared: expected {stego / 'img' / base} "
            f"(or {candidates[-1] / 'img' / base}); run `uss-bench datasets prepare {self.name} --splits {base} "
            f"--ratio {ratio} --data-root {self.root}`"
        )

    # ---- splits ----------------------------------------------------------------------------
    def split_spec(self, split: str) -> dict[str, Any]:
        return dict(self.card.get("splits", {}).get(split) or {})

    def is_fixture(self) -> bool:
        manifest = self.root / FIXTURE_MANIFEST
        return manifest.is_file() and self.name in json.loads(manifest.read_text())

    def expected_count(self, split: str) -> int | None:
        """The fixture's own count when the data root is a fixture, else the card's (None = not known)."""
        manifest = self.root / FIXTURE_MANIFEST
        if manifest.is_file():
            counts = json.loads(manifest.read_text()).get(self.name)
            if counts is not None:
                base = crop_split(split)
                if base is not None and base[0] in counts:
                    return 5 * counts[base[0]]
                return counts.get(split)
        count = self.split_spec(split).get("count")
        if isinstance(count, dict):
            count = count.get(self.preset, count.get("default"))
        return count

    def is_labelled(self, split: str) -> bool:
        parts = self.split_spec(split).get("union")
        if parts:
            return any(self.is_labelled(part) for part in parts)
        return self.split_spec(split).get("labelled", True)

    def list_items(self, split: str) -> list[Item]:
        parts = self.split_spec(split).get("union")
        if parts:  # a split the card declares as the concatenation of other splits (IIC: train+val)
            return [item for part in parts for item in self.list_items(part)]
        parsed = crop_split(split)
        if parsed is None:
            return self.list_base_items(split)
        directory = self.crop_dir(split)
        images = sorted((directory / "img" / parsed[0]).glob("*.jpg"), key=_numeric_stem)
        return [CropItem(p.stem, p, directory / "label" / parsed[0] / f"{p.stem}.png") for p in images]

    def figure_indices(self) -> list[int]:
        """Positions in this split of the card's ``figure_ids`` (an entry ``#k`` is position k); absent ones skipped."""
        position = {item.id: i for i, item in enumerate(self.items)}
        out = []
        for entry in self.card.get("figure_ids", []):
            entry = str(entry)
            index = int(entry[1:]) if entry.startswith("#") else position.get(entry, -1)
            if 0 <= index < len(self.items):
                out.append(index)
        return out

    # ---- hooks -----------------------------------------------------------------------------
    def list_base_items(self, split: str) -> list[Item]:
        raise NotImplementedError

    def read_image(self, item: Item) -> np.ndarray:
        return read_rgb(item.image)

    def read_raw_label(self, item: Item) -> np.ndarray | None:
        return None if item.label is None else read_png_array(item.label)

    def map_label(self, raw: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def raw_valid(self, raw: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # ---- loading ---------------------------------------------------------------------------
    def load(self, item: Item) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(item, CropItem):
            image = read_rgb(item.image)
            label = read_png_array(item.label).astype(np.int64) - 1
            label[label >= self.n_classes] = -1
            return image, label
        image = self.read_image(item)
        raw = self.read_raw_label(item)
        if raw is None:
            return image, np.full(image.shape[:2], -1, dtype=np.int64)
        return image, self.map_label(raw)

    def load_raw(self, item: Item) -> tuple[np.ndarray, np.ndarray | None]:
        """Image and the label exactly as stored (for ``datasets check``)."""
        if isinstance(item, CropItem):
            return read_rgb(item.image), read_png_array(item.label)
        return self.read_image(item), self.read_raw_label(item)

    def raw_valid_for(self, item: Item, raw: np.ndarray) -> np.ndarray:
        if isinstance(item, CropItem):
            return raw <= self.n_classes
        return self.raw_valid(raw)

    # ---- fast problems for `uss-bench run` -------------------------------------------------
    def quick_items(self, split: str) -> list[Item] | None:
        """Items for the up-front check; a family with a huge split may return None after checking presence."""
        return self.list_items(split)

    @classmethod
    def problems(
        cls, root: str | Path, splits: tuple[str, ...] = ("train", "val"), preset: str = "default"
    ) -> list[str]:
        """Presence, list files and counts (no image is decoded); each line starts with ``<name>:``."""
        obj = cls.bare(root, preset)
        out = []
        for split in splits:
            if split not in obj.card.get("splits", {}):
                out.append(f"{cls.name}: unknown split {split!r}; known: {', '.join(obj.card.get('splits', {}))}")
                continue
            try:
                items = obj.quick_items(split)
            except DatasetError as exc:
                out.append(f"{cls.name}: {exc}")
                continue
            if items is None:
                continue
            expected = obj.expected_count(split)
            if not items:
                out.append(f"{cls.name}: split {split!r} has no images under {obj.dataset_dir()}")
            elif expected is not None and len(items) != expected:
                out.append(f"{cls.name}: split {split!r} has {len(items)} images, the card expects {expected}")
            else:
                first = items[0]
                for path in (first.image, first.label):
                    if path is not None and not path.is_file():
                        out.append(f"{cls.name}: missing file {path}")
        return list(dict.fromkeys(out))  # a missing directory is reported once, not once per split


def lut_map(raw: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Map raw integer labels through a lookup table; values beyond the table become -1."""
    raw = raw.astype(np.int64, copy=False)
    out = np.full(raw.shape, -1, dtype=np.int64)
    inside = (raw >= 0) & (raw < len(table))
    out[inside] = table[raw[inside]]
    return out
