"""Each method's own protocol trains on and scores the images its official code does (issue 11 §4).

Expected ids are written from the official code's description (reference §1a, §2b) and the fixture's
own list files, not from the harness's split machinery.
"""

import numpy as np
import pytest

from uss_bench.config import resolve
from uss_bench.data.build import build_dataset
from uss_bench.data.fixtures import CITY_FILES, CITY_UNLABELLED, COCO_TRAIN, COCO_VAL, POTSDAM_LISTS, write_fixture
from uss_bench.spec import RunSpec


def _ids(dataset, root, split, **options):
    return [item.id for item in build_dataset(dataset, root, split, None, **options).items]


@pytest.mark.parametrize("dataset, lists", [
    ("cocostuff15", (COCO_TRAIN[:3], COCO_VAL)),  # Coco164kFull_Stuff_Coarse_7 in train2017 and val2017
    ("cocostuff3", (COCO_TRAIN[1:3], COCO_VAL)),  # Coco164kFew_Stuff_6
])
def test_iic_coco_trains_and_scores_curated_train2017_plus_val2017(tmp_path, dataset, lists):
    write_fixture(dataset, tmp_path)
    protocol = resolve(RunSpec("iic", dataset, "vgg-iic", protocol="iic")).protocol
    official = lists[0] + lists[1]  # IID: train and score curated train2017 + val2017 (transductive)
    assert _ids(dataset, tmp_path, protocol.eval_split) == official
    assert _ids(dataset, tmp_path, protocol.train_split) == official
    for image_id in lists[1]:  # the val2017 part is read from val2017's folders
        item = next(i for i in build_dataset(dataset, tmp_path, protocol.eval_split, None).items if i.id == image_id)
        assert item.image.parent.name == "val2017" and item.label.parent.name == "val2017"


@pytest.mark.parametrize("dataset", ["potsdam", "potsdam3"])
def test_iic_potsdam_scores_labelled_train_plus_test_and_trains_on_all(tmp_path, dataset):
    write_fixture(dataset, tmp_path)
    protocol = resolve(RunSpec("iic", dataset, "vgg-iic", protocol="iic")).protocol
    scored = POTSDAM_LISTS["labelled_train.txt"] + POTSDAM_LISTS["labelled_test.txt"]
    assert _ids(dataset, tmp_path, protocol.eval_split, channels="rgbir") == scored
    train = build_dataset(dataset, tmp_path, protocol.train_split, None, channels="rgbir")
    assert sorted(i.id for i in train.items) == sorted(POTSDAM_LISTS["unlabelled_train.txt"] + scored)
    for k, item in enumerate(train.items):  # unlabelled crops have no GT; labelled ones keep theirs
        label = train[k]["label"].numpy()
        assert (item.id in POTSDAM_LISTS["unlabelled_train.txt"]) == bool((label == -1).all())
        assert np.isin(label, np.arange(-1, 6)).all()


def test_picie_cityscapes_trains_on_test_extra_and_scores_val_plus_train(tmp_path):
    write_fixture("cityscapes27", tmp_path)
    protocol = resolve(RunSpec("picie", "cityscapes27", "resnet18-fpn", protocol="picie")).protocol
    scored = sorted(CITY_FILES["val"]) + sorted(CITY_FILES["train"])  # val first, then train, as PiCIE lists them
    assert _ids("cityscapes27", tmp_path, protocol.eval_split) == scored
    train_ids = _ids("cityscapes27", tmp_path, protocol.train_split)
    assert train_ids == sorted(CITY_UNLABELLED["test"]) + sorted(CITY_UNLABELLED["train_extra"])


def test_picie_coco_trains_on_the_curated_7_train_list_and_scores_val(tmp_path):
    write_fixture("cocostuff27", tmp_path)
    protocol = resolve(RunSpec("picie", "cocostuff27", "resnet18-fpn", protocol="picie")).protocol
    # PiCIE: curated/train2017/Coco164kFull_Stuff_Coarse_7.txt (fixture: the first three train ids), not
    # STEGO's Coco164kFull_Stuff_Coarse.txt (all four); scores curated/val2017/..._7.txt
    assert _ids("cocostuff27", tmp_path, protocol.train_split) == COCO_TRAIN[:3]
    assert _ids("cocostuff27", tmp_path, protocol.eval_split) == COCO_VAL


def test_other_protocols_are_unchanged():
    for method, dataset, backbone, name in [("stego", "cocostuff27", "vit-s8", "stego"),
                                            ("iic", "cocostuff15", "vgg-iic", "uss")]:
        protocol = resolve(RunSpec(method, dataset, backbone, protocol=name)).protocol
        assert (protocol.train_split, protocol.eval_split) == (None, "val")


def test_an_explicit_override_still_wins():
    spec = RunSpec("iic", "potsdam", "vgg-iic", protocol="iic", overrides={"protocol.eval_split": "val"})
    assert resolve(spec).protocol.eval_split == "val"
