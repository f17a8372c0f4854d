"""The fixtures carry what the official loaders read (issue 11 §9). Each test walks the files the way
the official loader is described to (reference §0-§2 and the loaders named below), not through uss-bench."""

import os
import pickle

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy.io import loadmat

from uss_bench.data.check import check_dataset
from uss_bench.data.fixtures import write_fixture
from uss_bench.paths import PROJECT_ROOT

# cityscapesScripts helpers/labels.py: labelId -> trainId for the 19 evaluated classes; every other id -> 255
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                        26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def test_picie_coco_loader_finds_everything(tmp_path):
    """PiCIE data/coco_{train,eval}_dataset.py: ids from curated/<split>2017/Coco164kFull_Stuff_Coarse_7.txt,
    images/<split>2017/<id>.jpg, annotations/<split>2017/<id>.png, <root>/fine_to_coarse_dict.pickle."""
    write_fixture("cocostuff27", tmp_path)
    root = tmp_path / "cocostuff"
    with open(root / "fine_to_coarse_dict.pickle", "rb") as fh:
        table = pickle.load(fh)["fine_index_to_coarse_index"]
    card = yaml.safe_load((PROJECT_ROOT / "datasets" / "cocostuff27.yaml").read_text())["fine_to_coarse"]
    assert table == {fine: coarse for coarse, fines in card.items() for fine in fines}
    # person, bicycle, sky-other, grass, wall-concrete
    assert (table[0], table[1], table[156], table[123], table[171]) == (9, 11, 23, 22, 18)
    assert (root / "fine_to_coarse_dict.pickle").read_bytes()[:2] == b"\x80\x02"  # protocol 2: Python 2 (IIC) reads it
    table[255] = -1  # as the loader does
    for split in ("train", "val"):
        ids = (root / "curated" / f"{split}2017" / "Coco164kFull_Stuff_Coarse_7.txt").read_text().splitlines()
        assert ids
        for image_id in ids:
            Image.open(root / "images" / f"{split}2017" / f"{image_id}.jpg").convert("RGB")
            label = np.array(Image.open(root / "annotations" / f"{split}2017" / f"{image_id}.png"))
            np.vectorize(lambda x: table[x])(label)  # every value has a coarse class


def test_picie_cityscapes_loader_finds_everything(tmp_path):
    """PiCIE data/cityscapes_eval_dataset.py: eval images from leftImg8bit/{val,train}/<city>/, label
    annotations/gtFine/<folder>/<city>/<name[:-16]>_gtFine_labelIds.png; training images from
    leftImg8bit/{test,train_extra}/<city>/ without labels."""
    write_fixture("cityscapes27", tmp_path)
    root = tmp_path / "cityscapes"
    n_eval = 0
    for folder in ("val", "train"):
        for city in os.listdir(root / "leftImg8bit" / folder):
            for fname in os.listdir(root / "leftImg8bit" / folder / city):
                image = Image.open(root / "leftImg8bit" / folder / city / fname).convert("RGB")
                name = fname[:-16] + "_gtFine_labelIds.png"
                label = Image.open(root / "annotations" / "gtFine" / folder / city / name)
                assert label.size == image.size
                n_eval += 1
    assert n_eval == 5
    n_train = sum(len(os.listdir(root / "leftImg8bit" / f / c)) for f in ("test", "train_extra")
                  for c in os.listdir(root / "leftImg8bit" / f))
    assert n_train == 3


def test_cityscapes_train_id_files(tmp_path):
    write_fixture("cityscapes19", tmp_path)
    labels = sorted((tmp_path / "cityscapes" / "gtFine").glob("*/*/*_gtFine_labelIds.png"))
    assert len(labels) == 5
    for path in labels:
        ids = np.array(Image.open(path)).astype(np.int64)
        train = np.array(Image.open(str(path).replace("_labelIds.png", "_labelTrainIds.png")))
        want = np.vectorize(lambda v: CITYSCAPES_TRAIN_IDS.get(int(v), 255))(ids)
        assert train.dtype == np.uint8 and np.array_equal(train, want)
        assert (train != 255).any() and (train == 255).any()


@pytest.mark.parametrize("name", ["potsdam", "potsdam3"])
def test_iic_potsdam_loader_finds_everything(tmp_path, name):
    """IIC code/datasets/segmentation/potsdam.py: asserts <root>/debugged.out; ids from <split>.txt for
    unlabelled_train / labelled_train / labelled_test; imgs/<id>.mat key img (uint8), gt/<id>.mat key gt
    (int32) where it exists."""
    write_fixture(name, tmp_path)
    root = tmp_path / "potsdam"
    assert (root / "debugged.out").exists()
    for split in ("unlabelled_train", "labelled_train", "labelled_test"):
        ids = (root / f"{split}.txt").read_text().splitlines()
        assert ids
        for image_id in ids:
            image = loadmat(str(root / "imgs" / f"{image_id}.mat"))["img"]
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 4
            gt_path = root / "gt" / f"{image_id}.mat"
            assert gt_path.exists() == (split != "unlabelled_train")
            if gt_path.exists():
                gt = loadmat(str(gt_path))["gt"]
                assert gt.dtype == np.int32 and gt.shape == image.shape[:2] and gt.max() < 6


def test_check_names_missing_official_files_without_failing(tmp_path):
    write_fixture("potsdam", tmp_path)
    assert check_dataset("potsdam", tmp_path).official_missing == []
    (tmp_path / "potsdam" / "debugged.out").unlink()
    report = check_dataset("potsdam", tmp_path)
    assert report.ok and "debugged.out" in report.line() and "IIC" in report.line()
    for name in ("cocostuff27", "cityscapes27", "cityscapes19"):
        write_fixture(name, tmp_path)
        assert check_dataset(name, tmp_path).official_missing == [], name
