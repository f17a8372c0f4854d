"""Tiny datasets in the exact on-disk layout and encoding of each real benchmark (for tests and demos).

``write_fixture(name, out)`` writes a few small images per split under ``out`` exactly where the real
files would be (curated COCO lists and stuffthingmap ids, Cityscapes city folders and
``_gtFine_labelIds.png`` names, Potsdam ``.mat`` files with keys ``img``/``gt``, RGB-encoded ImageNet-S
PNGs, ...). Everything is a pure function of the dataset name, so two runs write identical files.
The fixtures also carry what the official loaders read beyond the harness's needs (each card's
``official_files``): PiCIE's ``fine_to_coarse_dict.pickle`` beside COCO, PiCIE's
``annotations/gtFine`` copy of the Cityscapes labels, cityscapesScripts' ``*_gtFine_labelTrainIds.png``,
and IIC's ``debugged.out`` marker in the Potsdam directory.
``uss_bench_fixtures.json`` at the root records the split sizes; ``datasets check`` compares with those
instead of the card's full-size counts.
"""

from __future__ import annotations

import fnmatch
import json
import os
import pickle
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

from uss_bench.data.cityscapes import TRAIN_TABLE
from uss_bench.data.coco import FINE_TO_COARSE
from uss_bench.data.imagenet_s import encode_rgb_label
from uss_bench.data.layout import FIXTURE_MANIFEST
from uss_bench.paths import load_card


def _rng(*keys: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("/".join(map(str, keys)).encode()))


def _label_map(rng: np.random.Generator, h: int, w: int, values: list[int]) -> np.ndarray:
    """Vertical bands of the given raw values (every value appears), then a random 3x3 patch of the first."""
    bands = np.array_split(np.arange(w), len(values))
    out = np.zeros((h, w), dtype=np.int64)
    for cols, value in zip(bands, rng.permutation(values)):
        out[:, cols] = value
    y, x = int(rng.integers(0, h - 3)), int(rng.integers(0, w - 3))
    out[y : y + 3, x : x + 3] = values[0]
    return out


def _image_for(label: np.ndarray, rng: np.random.Generator, channels: int = 3) -> np.ndarray:
    """A colour per raw value plus noise, so images and labels agree."""
    palette = _rng("palette", channels).integers(30, 226, size=(65536 if label.max() > 255 else 256, channels))
    image = palette[np.clip(label, 0, len(palette) - 1)] + rng.integers(-20, 21, size=(*label.shape, channels))
    return np.clip(image, 0, 255).astype(np.uint8)


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _save_jpg(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, "JPEG", quality=95)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


# ---- COCO-Stuff ------------------------------------------------------------------------------------
COCO_TRAIN = ["000000000009", "000000000025", "000000000030", "000000000034"]
COCO_VAL = ["000000000139", "000000000285"]
COCO_LISTS = {  # list file -> (train ids, val ids)
    "Coco164kFull_Stuff_Coarse.txt": (COCO_TRAIN, COCO_VAL),
    "Coco164kFull_Stuff_Coarse_7.txt": (COCO_TRAIN[:3], COCO_VAL),
    "Coco164kFew_Stuff_6.txt": (COCO_TRAIN[1:3], COCO_VAL),
}
COCO_COUNTS = {"cocostuff27": {"train": 4, "val": 2, "train+val": 6, "picie_train": 3},
               "cocostuff15": {"train": 3, "val": 2, "train+val": 5},
               "cocostuff3": {"train": 2, "val": 2, "train+val": 4}}
# fine ids: person (thing), sky-other, grass (plant), road (ground), wall-concrete, unlabelled
COCO_VALUES = [0, 156, 123, 148, 171, 255]


def _coco(out: Path, extra_train: int = 0) -> None:
    root = out / "cocostuff"
    extra = [f"{900000 + k:012d}" for k in range(extra_train)]  # demo size: more train images, every list
    for sub, ids in (("train2017", COCO_TRAIN + extra), ("val2017", COCO_VAL)):
        for n, image_id in enumerate(ids):
            rng = _rng("coco", image_id)
            h, w = (36, 48) if n % 2 == 0 else (48, 40)
            label = _label_map(rng, h, w, COCO_VALUES)
            _save_jpg(root / "images" / sub / f"{image_id}.jpg", _image_for(label, rng))
            _save_png(root / "annotations" / sub / f"{image_id}.png", label.astype(np.uint8))
    for list_name, (train_ids, val_ids) in COCO_LISTS.items():
        _write_lines(root / "curated" / "train2017" / list_name, train_ids + extra)
        _write_lines(root / "curated" / "val2017" / list_name, val_ids)
    # PiCIE's loaders read <root>/fine_to_coarse_dict.pickle, key fine_index_to_coarse_index (182 ints);
    # protocol 2 so Python 2 (IIC) can read it too. The official file also names the classes; no loader reads that.
    table = {"fine_index_to_coarse_index": {fine: int(FINE_TO_COARSE[fine]) for fine in range(182)}}
    with open(root / "fine_to_coarse_dict.pickle", "wb") as fh:
        pickle.dump(table, fh, protocol=2)


# ---- Cityscapes ------------------------------------------------------------------------------------
CITY_FILES = {"train": ["aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000313"],
              "val": ["frankfurt_000000_000294", "lindau_000000_000019"]}
# unlabelled splits PiCIE trains on (leftImg8bit only)
CITY_UNLABELLED = {"test": ["berlin_000000_000019", "bonn_000000_000019"], "train_extra": ["augsburg_000000_000000"]}
# labelIds: unlabeled 0, ground 6, road 7, building 11, vegetation 21, sky 23, car 26, bicycle 33
CITY_VALUES = [0, 6, 7, 11, 21, 23, 26, 33]


def _cityscapes(out: Path, extra_train: int = 0) -> None:
    root = out / "cityscapes"
    extra = [f"zurich_{k:06d}_000019" for k in range(extra_train)]  # demo size: more train images
    for split, stems in {**CITY_FILES, "train": CITY_FILES["train"] + extra}.items():
        for stem in stems:
            city = stem.split("_")[0]
            rng = _rng("cityscapes", stem)
            label = _label_map(rng, 24, 48, CITY_VALUES)
            _save_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", _image_for(label, rng))
            ids = label.astype(np.uint8)
            _save_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)
            # PiCIE reads <dir>/annotations/gtFine/...; cityscapesScripts' trainId files (255 = ignore)
            _save_png(root / "annotations" / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)
            train_ids = np.where(TRAIN_TABLE[label] >= 0, TRAIN_TABLE[label], 255).astype(np.uint8)
            _save_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png", train_ids)
    for split, stems in CITY_UNLABELLED.items():
        for stem in stems:
            rng = _rng("cityscapes", stem)
            image = _image_for(_label_map(rng, 24, 48, CITY_VALUES), rng)
            _save_png(root / "leftImg8bit" / split / stem.split("_")[0] / f"{stem}_leftImg8bit.png", image)


# ---- Potsdam ---------------------------------------------------------------------------------------
POTSDAM_LISTS = {"labelled_train.txt": ["5", "2", "7"], "labelled_test.txt": ["0", "4"],
                 "unlabelled_train.txt": ["1", "3"]}
POTSDAM_COUNTS = {"train": 3, "val": 2, "train+val": 5, "unlabelled_train": 2, "unlabelled_train+train+val": 7,
                  "all": 7}


def _potsdam(out: Path) -> None:
    root = out / "potsdam"
    labelled = POTSDAM_LISTS["labelled_train.txt"] + POTSDAM_LISTS["labelled_test.txt"]
    every = labelled + POTSDAM_LISTS["unlabelled_train.txt"]
    for image_id in every:
        rng = _rng("potsdam", image_id)
        gt = _label_map(rng, 20, 20, [0, 1, 2, 3, 4, 5]).astype(np.int32)
        (root / "imgs").mkdir(parents=True, exist_ok=True)
        savemat(root / "imgs" / f"{image_id}.mat", {"img": _image_for(gt, rng, channels=4)})
        if image_id in labelled:
            (root / "gt").mkdir(parents=True, exist_ok=True)
            savemat(root / "gt" / f"{image_id}.mat", {"gt": gt})
    for name, ids in POTSDAM_LISTS.items():
        _write_lines(root / name, ids)
    _write_lines(root / "all.txt", sorted(every, key=int))
    (root / "debugged.out").write_text("")  # IIC's Potsdam loader asserts this file exists


# ---- ImageNet-S ------------------------------------------------------------------------------------
IMAGENET_S_COUNTS = {"train": 4, "train-semi": 2, "val": 2}


def _imagenet_s(name: str) -> Callable[[Path], None]:
    def write(out: Path) -> None:
        card = load_card("datasets", name)
        wnids = card["classes"][1:3]
        root = out / card["directory"]
        for c, wnid in enumerate(wnids, start=1):
            for k in range(2):
                rng = _rng(name, "train", wnid, k)
                image = _image_for(_label_map(rng, 28, 36, [0, c]), rng)
                _save_jpg(root / "train" / wnid / f"{wnid}_{1000 + k}.JPEG", image)
            for folder, stem in (("train-semi", f"{wnid}_{2000 + c}"), ("validation", f"ILSVRC2012_val_{c:08d}")):
                rng = _rng(name, folder, wnid)
                ids = _label_map(rng, 30, 34, [0, c, 1000])  # background, the class, ignore (1000: G = 3)
                _save_jpg(root / folder / wnid / f"{stem}.JPEG", _image_for(ids, rng))
                _save_png(root / f"{folder}-segmentation" / wnid / f"{stem}.png", encode_rgb_label(ids))

    return write


# ---- VOC -------------------------------------------------------------------------------------------
VOC_IDS = {"train_aug": ["2007_000032", "2008_000002", "2011_003276"], "val": ["2007_000033", "2007_000042"]}


def _voc(out: Path) -> None:
    root = out / "VOCdevkit" / "VOC2012"
    for split, ids in VOC_IDS.items():
        for image_id in ids:
            rng = _rng("voc", image_id)
            label = _label_map(rng, 30, 40, [0, 1, 15, 20, 255])
            _save_jpg(root / "JPEGImages" / f"{image_id}.jpg", _image_for(label, rng))
            _save_png(root / "SegmentationClassAug" / f"{image_id}.png", label.astype(np.uint8))
        _write_lines(root / "ImageSets" / "Segmentation" / f"{split}.txt", ids)


# ---- KITTI-STEP ------------------------------------------------------------------------------------
KITTI_FRAMES = {"train": ["0000/000000", "0000/000001", "0001/000000"], "val": ["0002/000000", "0002/000001"]}


def _kitti_step(out: Path) -> None:
    root = out / "kitti-step"
    for split, keys in KITTI_FRAMES.items():
        for key in keys:
            rng = _rng("kitti", split, key)
            semantic = _label_map(rng, 20, 60, [0, 2, 8, 10, 13, 255])
            panoptic = np.zeros((*semantic.shape, 3), dtype=np.uint8)
            panoptic[..., 0] = semantic
            panoptic[..., 2] = (semantic == 13) * 1  # one car instance (G*256+B = 1)
            _save_png(root / "images" / split / f"{key}.png", _image_for(semantic, rng))
            _save_png(root / "panoptic_maps" / split / f"{key}.png", panoptic)


WRITERS: dict[str, tuple[Callable[[Path], None], dict[str, int]]] = {
    **{name: (_coco, counts) for name, counts in COCO_COUNTS.items()},
    "cityscapes27": (_cityscapes, {"train": 3, "val": 2, "test": 2, "train_extra": 1, "picie_train": 3,
                                   "picie_eval": 5}),
    "cityscapes19": (_cityscapes, {"train": 3, "val": 2}),
    "potsdam": (_potsdam, POTSDAM_COUNTS),
    "potsdam3": (_potsdam, POTSDAM_COUNTS),
    **{f"imagenet-s{k}": (_imagenet_s(f"imagenet-s{k}"), IMAGENET_S_COUNTS) for k in (50, 300, 919)},
    "voc12": (_voc, {"train_aug": 3, "val": 2}),
    "kitti-step": (_kitti_step, {"train": 3, "val": 2}),
}


def _ucm_settings(name: str) -> dict | None:
    """HSG's OWT-UCM layout for ``name`` (its method card's ``oversegmentation``), if it reads one."""
    from uss_bench.paths import load_card

    for entry in load_card("methods", "hsg").get("configs") or []:
        if fnmatch.fnmatch(name, str(entry.get("dataset"))):  # card entries may name a family (cocostuff*)
            settings = (entry.get("hparams") or {}).get("oversegmentation") or {}
            return settings if settings.get("source") == "ucm" and settings.get("ucm_dir") else None
    return None


def _write_ucm_maps(name: str, out: Path) -> None:
    """Region-id PNGs where HSG reads its OWT-UCM maps (``ucm_dir`` / ``ucm_pattern``), one per training
    image: a 3x3 grid of regions, so a fixture also serves ``run --methods hsg`` in the official layout."""
    settings = _ucm_settings(name)
    if settings is None:
        return
    from uss_bench.data.build import build_dataset
    from uss_bench.paths import load_card

    ucm_dir = out / settings["ucm_dir"]
    pattern = str(settings.get("ucm_pattern") or "{id}.png")
    split = load_card("datasets", name).get("train_split", "train")
    for sample in build_dataset(name, out, split, None):
        h, w = sample["label"].shape[-2:]
        rows = np.minimum(np.arange(h) * 3 // h, 2)[:, None]
        cols = np.minimum(np.arange(w) * 3 // w, 2)[None, :]
        _save_png(ucm_dir / pattern.format(id=sample["id"]), (rows * 3 + cols).astype(np.uint8))


def fixture_names() -> list[str]:
    return sorted(WRITERS)


# families whose writer can add train images (``train_images``); the base split sizes stay as above
GROWABLE = ("cocostuff27", "cocostuff15", "cocostuff3", "cityscapes27", "cityscapes19")


def write_fixture(name: str, out: str | Path, train_images: int | None = None) -> dict[str, int]:
    """Write the fixture of ``name`` under ``out``; returns its split sizes (also recorded in the manifest).

    ``train_images``: at least this many training images (COCO-Stuff, Cityscapes), e.g. the smoke preset's
    batch size so that ``fixture`` + ``run --random-init --preset smoke`` works as a demo."""
    if name == "synthetic":
        from uss_bench.data.synthetic import ensure_generated

        ensure_generated(Path(out), "smoke")
        return {"train": 64, "val": 16}
    if name not in WRITERS:
        raise KeyError(f"no fixture writer for dataset {name!r}; known: {', '.join(fixture_names())}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writer, counts = WRITERS[name]
    counts = dict(counts)
    extra = max(0, (train_images or 0) - counts["train"]) if name in GROWABLE else 0
    if extra:
        writer(out, extra_train=extra)
        counts["train"] += extra
        if "picie_eval" in counts:  # cityscapes27's train+val split
            counts["picie_eval"] += extra
    else:
        writer(out)
    _write_ucm_maps(name, out)
    manifest_path = out / FIXTURE_MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest[name] = counts
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".fixtures.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
    os.replace(tmp, manifest_path)
    return dict(counts)
