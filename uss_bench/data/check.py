"""``uss-bench datasets check``: is a benchmark on disk, complete and readable?

Per split of the card: the files are listed and counted against the card (or the fixture's manifest),
every listed image/label file must exist, and a sample of items (all with ``full``) is decoded: image and
label sizes must match, and raw label values outside the encoding (e.g. 200 in a COCO stuffthingmap)
are counted. Optional splits (five-crops, unlabelled extras) are checked only when present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from uss_bench.data.base import DatasetError, Item
from uss_bench.data.layout import RealDataset, crop_split
from uss_bench.paths import load_card
from uss_bench.registry import DATASETS

SAMPLE_PER_SPLIT = 8
MAX_NAMED = 3


@dataclass
class CheckReport:
    name: str
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    optional_missing: list[str] = field(default_factory=list)
    official_missing: list[str] = field(default_factory=list)  # files only the official code reads
    files_read: int = 0
    hint: str = ""

    def add(self, split: str, message: str) -> None:
        """One problem; the same file reported again by an overlapping split (e.g. train+val) is kept once."""
        if all(not p.endswith(f": {message}") for p in self.problems):
            self.problems.append(f"{split}: {message}")

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        if self.ok:
            counts = ", ".join(f"{split} {n}" for split, n in self.counts.items())
            absent = f"; not prepared (optional): {', '.join(self.optional_missing)}" if self.optional_missing else ""
            official = (f"; for the official code also add: {'; '.join(self.official_missing)}"
                        if self.official_missing else "")
            return f"{self.name}: OK ({counts}; decoded {self.files_read} items){absent}{official}"
        hint = f" -> {self.hint}" if self.hint else ""
        return f"{self.name}: FAILED: {'; '.join(self.problems)}{hint}"


def _sample(n: int, size: int | None) -> list[int]:
    if size is None or n <= size:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, size)})


def _named(paths: list[Path], what: str) -> str:
    more = f" and {len(paths) - MAX_NAMED} more" if len(paths) > MAX_NAMED else ""
    return f"missing {what}: {', '.join(str(p) for p in paths[:MAX_NAMED])}{more}"


def _check_items(ds: RealDataset, split: str, items: list[Item], sample: int | None, report: CheckReport) -> None:
    missing_images = [it.image for it in items if not it.image.is_file()]
    missing_labels = [it.label for it in items if it.label is not None and not it.label.is_file()]
    if missing_images:
        report.add(split, _named(missing_images, "image file(s)"))
    if missing_labels:
        report.add(split, _named(missing_labels, "label file(s)"))
    bad_files: list[str] = []
    bad_pixels = 0
    for index in _sample(len(items), sample):
        item = items[index]
        if not item.image.is_file() or (item.label is not None and not item.label.is_file()):
            continue  # already reported
        try:
            image, raw = ds.load_raw(item)
        except DatasetError as exc:
            report.add(split, str(exc))
            continue
        report.files_read += 1
        if raw is None:
            continue
        if image.shape[:2] != raw.shape[:2]:
            report.add(
                split,
                f"image/label size mismatch: {item.image} is {image.shape[1]}x{image.shape[0]} "
                f"but {item.label} is {raw.shape[1]}x{raw.shape[0]}",
            )
        invalid = ~ds.raw_valid_for(item, raw)
        if invalid.any():
            values = np.unique(raw[invalid])[:5].tolist()
            bad_pixels += int(invalid.sum())
            bad_files.append(f"{item.label} (values {values})")
    if bad_files:
        more = f" and {len(bad_files) - MAX_NAMED} more files" if len(bad_files) > MAX_NAMED else ""
        report.add(
            split,
            f"{bad_pixels} label pixels out of range for {ds.n_classes} classes in "
            f"{', '.join(bad_files[:MAX_NAMED])}{more}",
        )


def check_dataset(
    name: str, data_root: str | Path, full: bool = False, sample: int = SAMPLE_PER_SPLIT, preset: str = "default"
) -> CheckReport:
    cls = DATASETS.get(name)
    report = CheckReport(name)
    if not issubclass(cls, RealDataset):
        return _check_generic(cls, name, Path(data_root), preset, report)
    ds = cls.bare(data_root, preset)
    report.hint = ds.card.get("missing_hint", "")
    try:
        ds.dataset_dir()
    except DatasetError as exc:
        report.problems.append(str(exc))
        report.hint = ""  # the message already says how to get the data
        return report
    for split, spec in ds.card.get("splits", {}).items():
        optional = bool((spec or {}).get("optional"))
        try:
            items = ds.list_items(split)
        except DatasetError as exc:
            if optional:
                report.optional_missing.append(split)
            else:
                report.problems.append(f"{split}: {exc}")
            continue
        if optional and not items and crop_split(split) is None:
            report.optional_missing.append(split)
            continue
        expected = ds.expected_count(split)
        parsed = crop_split(split)
        if expected is None and parsed is not None and parsed[0] in report.counts:
            expected = 5 * report.counts[parsed[0]]  # five crops per image of the base split
        report.counts[split] = len(items)
        if expected is not None and len(items) != expected:
            report.problems.append(f"{split}: found {len(items)} images, expected {expected}")
        _check_items(ds, split, items, None if full else sample, report)
    if any("five-crop" in p or "_five_crop_" in p for p in report.problems):
        report.hint = f"uss-bench datasets prepare {name}"
    report.official_missing = missing_official_files(ds)
    return report


def missing_official_files(ds: RealDataset) -> list[str]:
    """The card's ``official_files`` (paths or glob patterns under the dataset directory) that are absent."""
    missing = []
    for entry in ds.card.get("official_files", []) or []:
        pattern = str(entry["path"])
        found = any(ds.dataset_dir().glob(pattern)) if any(c in pattern for c in "*?[") else (
            ds.dataset_dir() / pattern).exists()
        if not found:
            missing.append(f"{pattern} ({entry.get('used_by', 'official code')})")
    return missing


def _check_generic(cls, name: str, root: Path, preset: str, report: CheckReport) -> CheckReport:
    """Datasets outside the real families (synthetic): build each split and decode a sample."""
    for split, spec in load_card("datasets", name).get("splits", {}).items():
        expected = (spec or {}).get("count")
        if isinstance(expected, dict):
            expected = expected.get(preset, expected.get("default"))
        try:
            ds = cls(root, split, transform=None, preset=preset)
            report.counts[split] = len(ds)
            if expected is not None and len(ds) != expected:
                report.problems.append(f"{split}: found {len(ds)} images, expected {expected}")
            for index in _sample(len(ds), SAMPLE_PER_SPLIT):
                ds[index]
                report.files_read += 1
        except (DatasetError, FileNotFoundError) as exc:
            report.problems.append(f"{split}: {exc}")
    return report


def check_splits(
    name: str, data_root: str | Path, splits: tuple[str, ...], preset: str = "default",
    sample: int | None = SAMPLE_PER_SPLIT,
) -> CheckReport:
    """``run``'s data check: the splits a run reads, listed and counted, and ``sample`` items of each decoded
    (all with ``sample=None``), exactly as ``datasets check`` does for every split of the card."""
    cls = DATASETS.get(name)
    report = CheckReport(name)
    if not issubclass(cls, RealDataset):
        for split in splits:
            try:
                ds = cls(Path(data_root), split, transform=None, preset=preset)
                report.counts[split] = len(ds)
                for index in _sample(len(ds), sample):
                    ds[index]
                    report.files_read += 1
            except (DatasetError, FileNotFoundError) as exc:
                report.add(split, str(exc))
        return report
    ds = cls.bare(data_root, preset)
    for split in splits:
        try:
            items = ds.list_items(split)
        except DatasetError as exc:
            report.add(split, str(exc))
            continue
        report.counts[split] = len(items)
        _check_items(ds, split, items, sample, report)
    return report
