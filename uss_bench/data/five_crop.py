"""STEGO's five-crop preprocessing (``crop_datasets.py``), written where and how STEGO writes it.

Each full-resolution image i of a split and its mapped label are cut by torchvision's ``five_crop``
into crops of (int(H * ratio), int(W * ratio)) in the order top-left, top-right, bottom-left,
bottom-right, centre; crop k becomes ``img/<split>/<5i+k>.jpg`` (PIL's default JPEG quality, as STEGO)
and ``label/<split>/<5i+k>.png`` (uint8, label + 1 so ignore is 0) under
``<data_root>/cropped/<name>_five_crop_<ratio>/``. Existing STEGO-made directories keep working.

Resumable: every file is written to a temporary name and renamed into place, so a file that exists is
complete; an interrupted run skips the images whose ten files all exist. A ``uss_bench_crop_<split>.json``
written last records that the split is complete.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from uss_bench.data.layout import RealDataset

STEGO_JPEG_QUALITY = 75  # PIL's default, what STEGO's Image.save(..., 'JPEG') uses


def five_crop_boxes(height: int, width: int, ratio: float) -> list[tuple[int, int, int, int]]:
    """(top, left, crop_h, crop_w) of torchvision's five_crop: tl, tr, bl, br, centre."""
    ch, cw = int(height * ratio), int(width * ratio)
    centre = (int(round((height - ch) / 2.0)), int(round((width - cw) / 2.0)))
    corners = [(0, 0), (0, width - cw), (height - ch, 0), (height - ch, width - cw), centre]
    return [(top, left, ch, cw) for top, left in corners]


def _atomic_save(array: np.ndarray, path: Path, fmt: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        image = Image.fromarray(array)
        if fmt == "JPEG":
            image.save(tmp, fmt, quality=STEGO_JPEG_QUALITY)
        else:
            image.save(tmp, fmt)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def crop_directory(ds: RealDataset, ratio: float) -> Path:
    return ds.root / "cropped" / f"{ds.card.get('crop_name', ds.name)}_five_crop_{ratio}"


def _crop_items(dataset_name: str, data_root: str, split: str, ratio: float, indices: list[int]) -> int:
    """Crop the given items (a worker's share); returns how many were (re)written."""
    from uss_bench.registry import DATASETS

    ds = DATASETS.get(dataset_name)(Path(data_root), split, transform=None)
    out = crop_directory(ds, ratio)
    img_dir, label_dir = out / "img" / split, out / "label" / split
    written = 0
    for i in indices:
        names = [str(5 * i + k) for k in range(5)]
        if all((img_dir / f"{n}.jpg").is_file() and (label_dir / f"{n}.png").is_file() for n in names):
            continue
        item = ds.items[i]
        image, label = ds.load(item)
        if label.min() < -1 or label.max() > 254:
            raise ValueError(f"{item.label}: mapped labels outside -1..254 cannot be stored as label + 1 in uint8")
        for n, (top, left, h, w) in zip(names, five_crop_boxes(*label.shape, ratio)):
            _atomic_save(np.ascontiguousarray(image[top : top + h, left : left + w, :3]), img_dir / f"{n}.jpg", "JPEG")
            _atomic_save((label[top : top + h, left : left + w] + 1).astype(np.uint8), label_dir / f"{n}.png", "PNG")
        written += 1
    return written


def five_crop_split(
    dataset_cls: type[RealDataset],
    data_root: str | Path,
    split: str,
    ratio: float = 0.5,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 0,
    chunk: int = 256,
) -> Path:
    """Crop one split; returns the crop directory. Safe to interrupt and run again."""
    ds = dataset_cls(Path(data_root), split, transform=None)
    out = crop_directory(ds, ratio)
    for sub in ("img", "label"):
        (out / sub / split).mkdir(parents=True, exist_ok=True)
        for stale in (out / sub / split).glob(".*.tmp"):  # left by an interrupted run; never listed
            stale.unlink()
    n = len(ds.items)
    chunks = [list(range(s, min(s + chunk, n))) for s in range(0, n, chunk)]
    args = (ds.name, str(data_root), split, ratio)
    done = 0
    if workers > 0:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for indices, _ in zip(chunks, pool.map(_crop_items, *zip(*[(*args, c) for c in chunks]))):
                done += len(indices)
                if progress is not None:
                    progress(done, n)
    else:
        for indices in chunks:
            _crop_items(*args, indices)
            done += len(indices)
            if progress is not None:
                progress(done, n)
    marker = {"dataset": ds.name, "split": split, "ratio": ratio, "images": n, "crops": 5 * n,
              "jpeg_quality": STEGO_JPEG_QUALITY}
    fd, tmp = tempfile.mkstemp(prefix=".marker.", suffix=".tmp", dir=out)
    with os.fdopen(fd, "w") as fh:
        json.dump(marker, fh, indent=2)
    os.replace(tmp, out / f"uss_bench_crop_{split}.json")
    return out
