"""The built-in synthetic benchmark: procedural scenes that need colour *and* texture.

Six classes come in three colour pairs; the two classes of a pair share their mean colour and
differ only in texture, so colour alone cannot separate them. Each scene is a random Voronoi
layout of 3-7 regions; pixels on region boundaries are labelled ignore (-1), like COCO's
unlabelled seams. Everything is a pure function of (seed, split, index), so every machine
generates the same files; they are written once under ``<data_root>/synthetic/<variant>/``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from uss_bench.data.base import DatasetError, Item, SegDataset, read_png_array, read_rgb
from uss_bench.registry import DATASETS

# Mean colours shared by class pairs (0/1, 2/3, 4/5), in RGB 0..255.
_PAIR_COLOURS = np.array([[70, 110, 200], [60, 150, 70], [140, 130, 120]], dtype=np.float32)
BOUNDARY_PX = 1.0

# Image size and split sizes per preset; the card lists the same numbers as expected counts.
VARIANTS = {
    "default": {"size": 128, "train": 240, "val": 48},
    "smoke": {"size": 64, "train": 64, "val": 16},
}
GENERATOR_VERSION = 1


def _texture(kind: int, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean texture in [-1, 1] for one class; pairs differ only here."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # smooth: slow gradient
        angle = rng.uniform(0, np.pi)
        return 0.3 * np.sin((np.cos(angle) * xx + np.sin(angle) * yy) / (2.0 * max(h, w)) * np.pi)
    if kind == 1:  # stripes: period 6 px, random phase
        phase = rng.uniform(0, 2 * np.pi)
        return np.sin(2 * np.pi * yy / 6.0 + phase)
    if kind == 2:  # fine noise
        return rng.uniform(-1, 1, size=(h, w)).astype(np.float32)
    if kind == 3:  # blobs: coarse noise upsampled
        coarse = rng.uniform(-1, 1, size=(h // 8 + 2, w // 8 + 2)).astype(np.float32)
        return np.kron(coarse, np.ones((8, 8), np.float32))[:h, :w]
    if kind == 4:  # flat
        return np.zeros((h, w), np.float32)
    # checkerboard, cell 4 px
    return np.where(((yy // 4) + (xx // 4)) % 2 == 0, 1.0, -1.0).astype(np.float32)


def generate_scene(seed: int, split: str, index: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene: uint8 RGB [size,size,3] and int64 labels [size,size] with -1 on boundaries."""
    split_code = {"train": 0, "val": 1}[split]
    rng = np.random.default_rng([seed, split_code, index])
    n_regions = int(rng.integers(3, 8))
    centres = rng.uniform(0, size, size=(n_regions, 2))
    classes = rng.integers(0, 6, size=n_regions)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dist = np.sqrt((yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2)
    order = np.sort(dist, axis=0)
    region = dist.argmin(axis=0)
    label = classes[region].astype(np.int64)
    # Ignore only seams between regions of *different* classes.
    nearest_two = np.argsort(dist, axis=0)[:2]
    seam = (order[1] - order[0] < BOUNDARY_PX) & (classes[nearest_two[0]] != classes[nearest_two[1]])
    label[seam] = -1

    image = np.zeros((size, size, 3), np.float32)
    for r in range(n_regions):
        cls = int(classes[r])
        mask = region == r
        base = _PAIR_COLOURS[cls // 2] * rng.uniform(0.85, 1.15)  # per-region brightness jitter
        texture = _texture(cls, size, size, rng)
        amplitude = 45.0
        pixel = base[None, None, :] + amplitude * texture[..., None] + rng.normal(0, 6, (size, size, 3))
        image[mask] = pixel[mask]
    return np.clip(image, 0, 255).astype(np.uint8), label


def ensure_generated(data_root: Path, preset: str, seed: int = 0) -> Path:
    """Generate the variant once (atomically: temp dir + rename) and return its directory."""
    variant = VARIANTS.get(preset, VARIANTS["default"])
    name = f"{variant['size']}px-s{seed}-v{GENERATOR_VERSION}"
    target = Path(data_root) / "synthetic" / name
    if (target / "meta.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        for split in ("train", "val"):
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            for i in range(variant[split]):
                image, label = generate_scene(seed, split, i, variant["size"])
                Image.fromarray(image).save(tmp / "images" / split / f"{i:05d}.png")
                # STEGO's crop convention: the PNG stores label + 1, so 0 is ignore.
                Image.fromarray((label + 1).astype(np.uint8)).save(tmp / "labels" / split / f"{i:05d}.png")
        meta = {"size": variant["size"], "seed": seed, "version": GENERATOR_VERSION,
                "counts": {s: variant[s] for s in ("train", "val")}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


@DATASETS.register("synthetic")
class SyntheticScenes(SegDataset):
    name = "synthetic"

    def dataset_dir(self) -> Path:
        return ensure_generated(self.root, self.preset)

    def list_items(self, split: str) -> list[Item]:
        directory = self.dataset_dir()
        images = sorted((directory / "images" / split).glob("*.png"))
        if not images:
            raise DatasetError(f"synthetic: no images in {directory / 'images' / split}")
        return [Item(p.stem, p, directory / "labels" / split / p.name) for p in images]

    def load(self, item: Item) -> tuple[np.ndarray, np.ndarray]:
        image = read_rgb(item.image)
        label = read_png_array(item.label).astype(np.int64) - 1
        return image, label
