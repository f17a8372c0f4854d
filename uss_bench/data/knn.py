"""Image kNN tables for STEGO's positive pairs (reference §1a, "kNN files").

File: ``<data_root>/nns/nns_<backbone>_<dataset>_<split>_<crop_type>_<res>.npz`` with key ``"nns"``,
an int64 array [N_images, 30] of neighbour indices into the split, position 0 being the image itself.
Unlike STEGO's ``nns_vit_small_...`` names, the backbone name carries the patch size
(``vit-s8`` vs ``vit-s16``), so the S/8 and S/16 tables no longer collide.

Descriptor per image: the DINO patch features averaged over the grid, L2-normalised; neighbours by
cosine similarity (STEGO's precompute_knns.py).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

KNN_K = 30


class MissingKnnError(FileNotFoundError):
    """A kNN table is not on disk; the message names it and the command that writes it."""


def knn_path(data_root: str | Path, dataset: str, split: str, backbone: str, crop_type: str | None, res: int) -> Path:
    """Where the table for (dataset, split, backbone incl. patch size, crop type, resolution) lives."""
    return Path(data_root) / "nns" / f"nns_{backbone}_{dataset}_{split}_{crop_type}_{res}.npz"


def load_knn(path: str | Path) -> np.ndarray:
    """The ``nns`` array [N, 30] int64; one clear error if the file is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise MissingKnnError(f"missing kNN table {path}; create it with `uss-bench datasets prepare`")
    with np.load(path) as data:
        if "nns" not in data:
            raise ValueError(f"kNN table {path} has no 'nns' array (keys: {sorted(data.files)})")
        nns = data["nns"]
    if nns.ndim != 2 or not np.issubdtype(nns.dtype, np.integer):
        raise ValueError(f"kNN table {path}: expected an integer [N, k] array, got {nns.dtype} {nns.shape}")
    return nns.astype(np.int64, copy=False)


def save_knn(path: str | Path, nns: np.ndarray) -> Path:
    """Write atomically (temp file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, nns=np.asarray(nns, dtype=np.int64))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def nearest_neighbours(descriptors: torch.Tensor, k: int = KNN_K, chunk: int = 4096) -> np.ndarray:
    """Top-k cosine neighbours of each row (itself first) of descriptors [N, D], in row chunks."""
    x = F.normalize(descriptors.float(), dim=1)
    k = min(k, x.shape[0])
    out = []
    for start in range(0, x.shape[0], chunk):
        sims = x[start : start + chunk] @ x.T
        # The image itself is always first, whatever ties or rounding do.
        sims[torch.arange(sims.shape[0]), torch.arange(start, start + sims.shape[0])] = float("inf")
        out.append(sims.topk(k, dim=1).indices)
    return torch.cat(out).cpu().numpy().astype(np.int64)


@torch.no_grad()
def image_descriptors(backbone: torch.nn.Module, dataset: Dataset, batch_size: int = 32,
                      device: torch.device | None = None) -> torch.Tensor:
    """Spatially averaged patch features [N, D] of every image of ``dataset`` (uint8 samples)."""
    from uss_bench.data.base import collate
    from uss_bench.data.transforms import to_unit_float

    device = device or torch.device("cpu")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    feats = []
    for batch in loader:
        patch = backbone(to_unit_float(batch["image"].to(device))).patch
        feats.append(patch.mean(dim=(2, 3)).cpu())
    return torch.cat(feats)


def compute_knn(backbone: torch.nn.Module, dataset: Dataset, k: int = KNN_K, batch_size: int = 32,
                device: torch.device | None = None) -> np.ndarray:
    """The kNN table of ``dataset`` under ``backbone`` (frozen, eval mode: no feature dropout)."""
    return nearest_neighbours(image_descriptors(backbone, dataset, batch_size, device), k)
