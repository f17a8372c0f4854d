"""Precompute STEGO's image-level kNN tables (``precompute_knns.py``), resumably.

As STEGO: images at ``res`` (224) through Resize(shorter side, nearest) + CenterCrop; per image the DINO
patch features averaged over the grid, L2-normalised; top-30 cosine neighbours (itself first).
STEGO runs its featurizer in train mode, so Dropout2d(p=0.1) is active on the features while the
descriptors are computed; ``feature_dropout`` reproduces that (0.1, default) with a fixed seed per chunk,
or switches it off (0). The file name carries the backbone *with* its patch size (``knn.knn_path``).

Resumable: descriptors are computed in chunks, each saved atomically under
``nns/.partial/<table name>/``; a restart skips finished chunks. The table is written atomically
last, and the partial directory removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Subset

from uss_bench.data.build import build_dataset
from uss_bench.data.knn import image_descriptors, knn_path, nearest_neighbours, save_knn
from uss_bench.data.layout import crop_split
from uss_bench.data.transforms import SegTransform

KNN_RES = 224  # hard-coded in STEGO's precompute_knns.py
CHUNK = 1024


def knn_file_for(data_root: str | Path, dataset: str, split: str, backbone: str, res: int = KNN_RES) -> Path:
    """Where the table of (dataset, split) lives; a five-crop split maps to (base split, crop type)."""
    parsed = crop_split(split)
    base, crop_type = (parsed[0], parsed[1]) if parsed else (split, None)
    return knn_path(data_root, dataset, base, backbone, crop_type, res)


class DroppedFeatures(torch.nn.Module):
    """Backbone whose patch features pass through a seeded Dropout2d (STEGO's train-mode featurizer)."""

    def __init__(self, backbone: torch.nn.Module, p: float, seed: int) -> None:
        super().__init__()
        self.backbone, self.p = backbone, p
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, images: torch.Tensor):
        features = self.backbone(images)
        if self.p > 0:
            b, d = features.patch.shape[:2]
            keep = (torch.rand(b, d, 1, 1, generator=self.generator) >= self.p).to(features.patch)
            features.patch = features.patch * keep / (1.0 - self.p)
        return features


def precompute_knn(
    dataset: str,
    data_root: str | Path,
    split: str,
    backbone_name: str,
    backbone: torch.nn.Module,
    res: int = KNN_RES,
    feature_dropout: float = 0.1,
    seed: int = 0,
    batch_size: int = 32,
    device: torch.device | None = None,
    chunk: int = CHUNK,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Compute and write the kNN table; returns its path."""
    target = knn_file_for(data_root, dataset, split, backbone_name, res)
    ds = build_dataset(dataset, data_root, split, SegTransform(res, "center", "nearest"))
    partial = target.parent / ".partial" / target.stem
    partial.mkdir(parents=True, exist_ok=True)
    backbone = backbone.to(device or torch.device("cpu")).eval()
    starts = list(range(0, len(ds), chunk))
    for n, start in enumerate(starts):
        part = partial / f"{start:09d}.pt"
        if not part.is_file():
            model = DroppedFeatures(backbone, feature_dropout, seed * 1_000_003 + start)
            indices = range(start, min(start + chunk, len(ds)))
            feats = image_descriptors(model, Subset(ds, indices), batch_size, device)
            fd, tmp = tempfile.mkstemp(prefix=".chunk.", suffix=".tmp", dir=partial)
            os.close(fd)
            torch.save(feats, tmp)
            os.replace(tmp, part)
        if progress is not None:
            progress(n + 1, len(starts))
    descriptors = torch.cat([torch.load(partial / f"{s:09d}.pt") for s in starts])
    save_knn(target, nearest_neighbours(descriptors))
    shutil.rmtree(partial, ignore_errors=True)
    with contextlib.suppress(OSError):
        partial.parent.rmdir()  # only when no other table is half-way
    return target
