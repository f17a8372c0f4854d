"""Every registered dataset: fixture -> loader -> `datasets check`, and the ways real data goes wrong."""

import numpy as np
import pytest
import torch
from PIL import Image

from uss_bench.data.base import DatasetError, collate
from uss_bench.data.build import build_dataset, dataset_problems
from uss_bench.data.check import check_dataset
from uss_bench.data.fixtures import fixture_names, write_fixture
from uss_bench.data.transforms import SegTransform
from uss_bench.registry import DATASETS

REAL = [n for n in DATASETS.names() if n != "synthetic"]


def test_every_registered_dataset_has_a_fixture_writer():
    assert set(REAL) == set(fixture_names())
    assert set(DATASETS.names()) == {
        "cocostuff27", "cocostuff15", "cocostuff3", "cityscapes27", "cityscapes19", "potsdam", "potsdam3",
        "imagenet-s50", "imagenet-s300", "imagenet-s919", "voc12", "kitti-step", "synthetic",
    }


@pytest.mark.parametrize("name", REAL)
def test_fixture_loads_and_checks(name, tmp_path):
    counts = write_fixture(name, tmp_path)
    report = check_dataset(name, tmp_path)
    assert report.ok, report.line()
    assert report.line().startswith(f"{name}: OK")
    cls = DATASETS.get(name)
    for split, n in counts.items():
        ds = build_dataset(name, tmp_path, split, SegTransform(16, "center", "nearest"))
        assert len(ds) == n
        sample = ds[0]
        assert sample["image"].shape == (3, 16, 16) and sample["image"].dtype == torch.uint8
        assert sample["label"].shape == (16, 16) and sample["label"].dtype == torch.int64
        raw = build_dataset(name, tmp_path, split, None)
        labels = torch.cat([raw[i]["label"].reshape(-1) for i in range(len(raw))])
        assert labels.min() >= -1 and labels.max() < ds.n_classes
        if cls.bare(tmp_path).is_labelled(split):
            assert (labels >= 0).any(), f"{name}/{split}: fixture labels must contain classes"
    train_split = cls.bare(tmp_path).card.get("train_split", "train")
    assert dataset_problems(name, tmp_path, (train_split, "val")) == []


@pytest.mark.slow
def test_synthetic_fixture_checks(tmp_path):
    write_fixture("synthetic", tmp_path)
    assert check_dataset("synthetic", tmp_path).ok


def test_missing_dataset_names_the_expected_path(tmp_path):
    report = check_dataset("cocostuff27", tmp_path)
    assert not report.ok
    assert str(tmp_path / "cocostuff") in report.line() and "cocostuff.zip" in report.line()
    problems = dataset_problems("potsdam3", tmp_path, ("train", "val"))
    assert problems and all(p.startswith("potsdam3: ") for p in problems)
    assert str(tmp_path / "potsdam") in problems[0]
    with pytest.raises(DatasetError, match=str(tmp_path / "cityscapes")):
        build_dataset("cityscapes27", tmp_path, "val", None)


def test_deleted_files_are_named(tmp_path):
    write_fixture("cocostuff27", tmp_path)
    write_fixture("cityscapes27", tmp_path)
    image = tmp_path / "cocostuff" / "images" / "val2017" / "000000000285.jpg"
    image.unlink()
    label = tmp_path / "cityscapes" / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png"
    label.unlink()
    for name, path in (("cocostuff27", image), ("cityscapes27", label)):
        report = check_dataset(name, tmp_path)
        assert not report.ok and str(path) in report.line()
    # a deleted list file is named too, also by the fast up-front check of `uss-bench run`
    listing = tmp_path / "cocostuff" / "curated" / "val2017" / "Coco164kFull_Stuff_Coarse_7.txt"
    listing.unlink()
    assert str(listing) in check_dataset("cocostuff27", tmp_path).line()
    assert any(str(listing) in p for p in dataset_problems("cocostuff27", tmp_path, ("train", "val")))


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "name, relpath",
    [
        ("cocostuff27", "cocostuff/images/val2017/000000000139.jpg"),
        ("potsdam", "potsdam/imgs/0.mat"),
        ("imagenet-s50", "ImageNetS50/validation-segmentation/n01443537/ILSVRC2012_val_00000001.png"),
        ("voc12", "VOCdevkit/VOC2012/JPEGImages/2007_000033.jpg"),
    ],
)
def test_truncated_file_is_named(name, relpath, tmp_path):
    write_fixture(name, tmp_path)
    _truncate(tmp_path / relpath)
    line = check_dataset(name, tmp_path).line()
    assert "FAILED" in line and str(tmp_path / relpath) in line and "corrupt or truncated" in line


def test_truncated_image_raises_in_the_main_process_with_the_file(tmp_path):
    write_fixture("cocostuff27", tmp_path)
    path = tmp_path / "cocostuff" / "images" / "val2017" / "000000000285.jpg"
    _truncate(path)
    ds = build_dataset("cocostuff27", tmp_path, "val", SegTransform(16))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, collate_fn=collate)
    with pytest.raises(DatasetError, match=str(path)):
        next(iter(loader))


def test_size_mismatch_names_both_files(tmp_path):
    write_fixture("voc12", tmp_path)
    root = tmp_path / "VOCdevkit" / "VOC2012"
    label = root / "SegmentationClassAug" / "2007_000042.png"
    Image.fromarray(np.zeros((7, 9), np.uint8)).save(label)
    line = check_dataset("voc12", tmp_path).line()
    image = root / "JPEGImages" / "2007_000042.jpg"
    assert "size mismatch" in line and str(image) in line and str(label) in line
    with pytest.raises(DatasetError, match="size mismatch"):
        build_dataset("voc12", tmp_path, "val", None)[1]


def test_out_of_range_labels_are_counted(tmp_path):
    write_fixture("cocostuff27", tmp_path)
    label = tmp_path / "cocostuff" / "annotations" / "val2017" / "000000000139.png"
    raw = np.array(Image.open(label))
    raw[:2, :5] = 200  # not a COCO-Stuff id (0..181) nor 255
    Image.fromarray(raw).save(label)
    line = check_dataset("cocostuff27", tmp_path).line()
    assert "10 label pixels out of range for 27 classes" in line and str(label) in line and "[200]" in line
    # the loader ignores them
    lab = build_dataset("cocostuff27", tmp_path, "val", None)[0]["label"]
    assert (lab[:2, :5] == -1).all()


def test_fixture_is_deterministic(tmp_path):
    write_fixture("potsdam", tmp_path / "a")
    write_fixture("potsdam", tmp_path / "b")
    for rel in ("potsdam/imgs/5.mat", "potsdam/gt/5.mat", "potsdam/all.txt"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_imagenet_train_presence_check_counts_class_folders_only(tmp_path):
    (tmp_path / "ImageNetS50" / "train" / "n01443537").mkdir(parents=True)
    problems = dataset_problems("imagenet-s50", tmp_path, ("train",))
    assert problems == [f"imagenet-s50: {tmp_path / 'ImageNetS50' / 'train'} has 1 class folders, expected 50"]
