"""Cityscapes, Potsdam, ImageNet-S, VOC and KITTI-STEP loaders: encodings and mappings by hand."""

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy.io import loadmat, savemat

from uss_bench.data.build import build_dataset
from uss_bench.data.fixtures import write_fixture
from uss_bench.data.imagenet_s import decode_rgb_label, encode_rgb_label
from uss_bench.paths import cards_dir

# reference/stego_hp_ppap.md §1a (and picie_iic_hsg_san_imagenet_s.md §0.3), in order
CITYSCAPES_27 = [
    "road", "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge", "tunnel",
    "pole", "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle",
]


def _card(name):
    return yaml.safe_load((cards_dir("datasets") / f"{name}.yaml").read_text())


def test_cityscapes27_names_and_label_ids(tmp_path):
    assert _card("cityscapes27")["classes"] == CITYSCAPES_27
    write_fixture("cityscapes27", tmp_path)
    ds = build_dataset("cityscapes27", tmp_path, "val", None)
    assert [s["id"] for s in ds] == ["frankfurt_000000_000294", "lindau_000000_000019"]
    raw = np.array(Image.open(tmp_path / "cityscapes/gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"))
    label = ds[0]["label"].numpy()
    # unlabeled 0 and ground 6 ignored; road 7 -> 0, building 11 -> 4, sky 23 -> 16, bicycle 33 -> 26
    for value, cls in {0: -1, 6: -1, 7: 0, 11: 4, 21: 14, 23: 16, 26: 19, 33: 26}.items():
        assert (label[raw == value] == cls).all()


def test_cityscapes19_train_ids(tmp_path):
    card = _card("cityscapes19")
    assert card["classes"][:3] == ["road", "sidewalk", "building"] and card["classes"][-1] == "bicycle"
    write_fixture("cityscapes19", tmp_path)
    raw = np.array(Image.open(tmp_path / "cityscapes/gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"))
    label = build_dataset("cityscapes19", tmp_path, "val", None)[0]["label"].numpy()
    for value, cls in {0: -1, 6: -1, 7: 0, 11: 2, 21: 8, 23: 10, 26: 13, 33: 18}.items():
        assert (label[raw == value] == cls).all()
    # cityscapesScripts' labelTrainIds files are read as they are with labels=trainIds
    for city, stem in (("frankfurt", "frankfurt_000000_000294"), ("lindau", "lindau_000000_000019")):
        train_ids = np.full(raw.shape, 255, np.uint8)
        train_ids[:, :4] = 18
        Image.fromarray(train_ids).save(tmp_path / f"cityscapes/gtFine/val/{city}/{stem}_gtFine_labelTrainIds.png")
    ds = build_dataset("cityscapes19", tmp_path, "val", None, labels="trainIds")
    assert len(ds) == 2
    assert (ds[0]["label"][:, :4] == 18).all() and (ds[0]["label"][:, 4:] == -1).all()


def test_potsdam_mat_files_and_merge(tmp_path):
    write_fixture("potsdam", tmp_path)
    gt = loadmat(tmp_path / "potsdam/gt/0.mat")["gt"]
    img = loadmat(tmp_path / "potsdam/imgs/0.mat")["img"]
    assert img.shape == (20, 20, 4) and img.dtype == np.uint8
    six = build_dataset("potsdam", tmp_path, "val", None)
    assert [s["id"] for s in six] == ["0", "4"]
    assert six[0]["image"].shape == (3, 20, 20) and (six[0]["image"].numpy() == img[..., :3].transpose(2, 0, 1)).all()
    assert (six[0]["label"].numpy() == gt).all()
    three = build_dataset("potsdam3", tmp_path, "val", None)[0]["label"].numpy()
    for fine, coarse in {0: 0, 4: 0, 1: 1, 5: 1, 2: 2, 3: 2}.items():
        assert (three[gt == fine] == coarse).all()
    rgbir = build_dataset("potsdam", tmp_path, "val", None, channels="rgbir")[0]["image"]
    assert rgbir.shape == (4, 20, 20) and (rgbir[3].numpy() == img[..., 3]).all()
    # unlabelled crops carry no gt file: labels are all ignore
    assert (build_dataset("potsdam", tmp_path, "unlabelled_train", None)[0]["label"] == -1).all()
    # 255 is STEGO's ignore
    savemat(tmp_path / "potsdam/gt/0.mat", {"gt": np.full((20, 20), 255, np.int32)})
    assert (build_dataset("potsdam3", tmp_path, "val", None)[0]["label"] == -1).all()


def test_imagenet_s_rgb_encoding_and_classes(tmp_path):
    ids = np.array([[0, 1, 255, 256], [300, 919, 1000, 0]])
    enc = encode_rgb_label(ids)
    assert enc[1, 2].tolist() == [232, 3, 0]  # 1000 = 232 + 256 * 3
    assert (decode_rgb_label(enc) == ids).all()
    card = _card("imagenet-s50")
    assert card["classes"][0] == "background" and len(card["classes"]) == 51
    assert card["classes"][1:] == sorted(card["classes"][1:])
    write_fixture("imagenet-s50", tmp_path)
    ds = build_dataset("imagenet-s50", tmp_path, "val", None)
    png = tmp_path / "ImageNetS50/validation-segmentation/n01443537/ILSVRC2012_val_00000001.png"
    raw = decode_rgb_label(np.array(Image.open(png)))
    label = ds[0]["label"].numpy()
    assert set(np.unique(raw)) == {0, 1, 1000}
    assert (label[raw == 1000] == -1).all() and (label[raw == 1] == 1).all() and (label[raw == 0] == 0).all()
    semi = build_dataset("imagenet-s50", tmp_path, "train-semi", None)
    assert len(semi) == 2 and (semi[1]["label"] >= 0).any()
    assert (build_dataset("imagenet-s50", tmp_path, "train", None)[0]["label"] == -1).all()


def test_voc_and_kitti_step(tmp_path):
    write_fixture("voc12", tmp_path)
    png = tmp_path / "VOCdevkit/VOC2012/SegmentationClassAug/2007_000033.png"
    raw = np.array(Image.open(png))
    label = build_dataset("voc12", tmp_path, "val", None)[0]["label"].numpy()
    assert (label[raw == 255] == -1).all() and (label[raw == 15] == 15).all() and (label[raw == 0] == 0).all()
    write_fixture("kitti-step", tmp_path)
    pan = np.array(Image.open(tmp_path / "kitti-step/panoptic_maps/val/0002/000000.png"))
    label = build_dataset("kitti-step", tmp_path, "val", None)[0]["label"].numpy()
    assert (label[pan[..., 0] == 13] == 13).all() and (label[pan[..., 0] == 255] == -1).all()


def test_unknown_option_value_is_a_clear_error(tmp_path):
    write_fixture("potsdam", tmp_path)
    with pytest.raises(ValueError, match="channels"):
        build_dataset("potsdam", tmp_path, "val", None, channels="bgr")[0]
    with pytest.raises(ValueError, match="unknown dataset option"):
        build_dataset("potsdam3", tmp_path, "val", None, labels="trainIds")


def test_figure_ids_resolve_to_positions(tmp_path):
    write_fixture("voc12", tmp_path)
    write_fixture("potsdam", tmp_path)
    assert build_dataset("voc12", tmp_path, "val", None).figure_indices() == [0, 1]  # 2007_000061 not in fixture
    assert build_dataset("potsdam", tmp_path, "val", None).figure_indices() == [0, 1]  # '#0'..'#3', 2 images
