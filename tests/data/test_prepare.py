"""`datasets prepare`: STEGO's five-crop layout and the resumable kNN precompute."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import five_crop

from uss_bench.backbones.vit import Features
from uss_bench.data.build import build_dataset
from uss_bench.data.check import check_dataset
from uss_bench.data.five_crop import five_crop_boxes, five_crop_split
from uss_bench.data.fixtures import write_fixture
from uss_bench.data.knn import load_knn
from uss_bench.data.knn_precompute import knn_file_for, precompute_knn
from uss_bench.data.transforms import SegTransform
from uss_bench.registry import DATASETS


@pytest.mark.parametrize("shape", [(36, 48), (48, 40), (37, 51), (1024, 2048)])
def test_boxes_match_torchvision_five_crop(shape):
    h, w = shape
    image = torch.arange(h * w).view(1, h, w)
    ours = [image[:, t : t + ch, l : l + cw] for t, l, ch, cw in five_crop_boxes(h, w, 0.5)]
    theirs = five_crop(image, [int(h * 0.5), int(w * 0.5)])  # what STEGO's crop_datasets.py calls
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_five_crop_writes_stego_layout_and_resumes(tmp_path):
    write_fixture("cocostuff27", tmp_path)
    out = five_crop_split(DATASETS.get("cocostuff27"), tmp_path, "val", 0.5)
    assert out == tmp_path / "cropped" / "cocostuff27_five_crop_0.5"
    assert sorted(p.name for p in (out / "img" / "val").iterdir()) == [f"{k}.jpg" for k in range(10)]
    # crop 5*1+4 is the centre of val image 1 (48x40 -> 24x20 at offset (12, 10)); labels stored + 1
    full = build_dataset("cocostuff27", tmp_path, "val", None)[1]["label"].numpy()
    stored = np.array(Image.open(out / "label" / "val" / "9.png")).astype(np.int64)
    assert stored.shape == (24, 20) and (stored - 1 == full[12:36, 10:30]).all()
    crops = build_dataset("cocostuff27", tmp_path, "val_five_crop_0.5", None)
    assert len(crops) == 10 and (crops[9]["label"].numpy() == full[12:36, 10:30]).all()
    assert check_dataset("cocostuff27", tmp_path).counts["val_five_crop_0.5"] == 10
    # an interrupted run: one file missing, a stray temp file; the rerun completes only what is missing
    (out / "img" / "val" / "7.jpg").unlink()
    (out / "img" / "val" / ".8.jpg.abc.tmp").write_bytes(b"half")
    before = (out / "img" / "val" / "2.jpg").stat().st_mtime_ns
    assert len(build_dataset("cocostuff27", tmp_path, "val_five_crop_0.5", None)) == 9  # temp never listed
    five_crop_split(DATASETS.get("cocostuff27"), tmp_path, "val", 0.5)
    assert (out / "img" / "val" / "7.jpg").is_file() and not (out / "img" / "val" / ".8.jpg.abc.tmp").exists()
    assert (out / "img" / "val" / "2.jpg").stat().st_mtime_ns == before
    assert check_dataset("cocostuff27", tmp_path).ok


@pytest.mark.slow
def test_worker_processes_write_the_same_files(tmp_path):
    for sub, workers in (("serial", 0), ("pool", 1)):
        write_fixture("cocostuff27", tmp_path / sub)
        five_crop_split(DATASETS.get("cocostuff27"), tmp_path / sub, "train", 0.5, workers=workers, chunk=1)
    for path in sorted((tmp_path / "serial" / "cropped").rglob("*.*")):
        if path.suffix in (".jpg", ".png"):
            twin = tmp_path / "pool" / path.relative_to(tmp_path / "serial")
            assert path.read_bytes() == twin.read_bytes()


def test_hp_ppap_crop_location_is_read(tmp_path):
    write_fixture("cityscapes27", tmp_path)
    out = five_crop_split(DATASETS.get("cityscapes27"), tmp_path, "train", 0.5)
    assert out.name == "cityscapes_five_crop_0.5"  # STEGO's name for Cityscapes
    (tmp_path / "cityscapes" / "cropped").mkdir()
    out.rename(tmp_path / "cityscapes" / "cropped" / out.name)  # HP/PPAP: <data_path>/cropped/...
    assert len(build_dataset("cityscapes27", tmp_path, "train_five_crop_0.5", None)) == 15


def test_missing_crop_split_names_the_prepare_step(tmp_path):
    write_fixture("cocostuff27", tmp_path)
    with pytest.raises(Exception, match="uss-bench datasets prepare cocostuff27"):
        build_dataset("cocostuff27", tmp_path, "train_five_crop_0.5", None)


class MeanColour(torch.nn.Module):
    """Stand-in backbone: 'patch features' = the image pooled to 2x2, so descriptors are known by hand."""

    def forward(self, images):
        return Features(patch=torch.nn.functional.adaptive_avg_pool2d(images, 2))


def test_knn_name_has_patch_size_and_resume_gives_the_same_table(tmp_path):
    write_fixture("cocostuff27", tmp_path)
    five_crop_split(DATASETS.get("cocostuff27"), tmp_path, "train", 0.5)
    path = knn_file_for(tmp_path, "cocostuff27", "train_five_crop_0.5", "vit-s8")
    assert path.name == "nns_vit-s8_cocostuff27_train_five_224.npz"
    assert knn_file_for(tmp_path, "cocostuff27", "train_five_crop_0.5", "vit-s16") != path
    path = knn_file_for(tmp_path, "cocostuff27", "train_five_crop_0.5", "vit-s8", res=32)

    def interrupt(done, total):
        if done == 2:
            raise KeyboardInterrupt

    kwargs = dict(res=32, feature_dropout=0.1, seed=0, batch_size=3, chunk=6)
    with pytest.raises(KeyboardInterrupt):
        precompute_knn("cocostuff27", tmp_path, "train_five_crop_0.5", "vit-s8", MeanColour(), progress=interrupt,
                       **kwargs)
    assert not path.exists()  # nothing half-written that reads as complete
    partial = sorted((path.parent / ".partial" / path.stem).glob("*.pt"))
    assert len(partial) == 2
    resumed = load_knn(precompute_knn("cocostuff27", tmp_path, "train_five_crop_0.5", "vit-s8", MeanColour(),
                                      res=32, feature_dropout=0.1, seed=0, batch_size=3, chunk=6))
    assert not (path.parent / ".partial").exists()
    path.unlink()
    fresh = load_knn(precompute_knn("cocostuff27", tmp_path, "train_five_crop_0.5", "vit-s8", MeanColour(), **kwargs))
    assert resumed.shape == (20, 20) and np.array_equal(resumed, fresh)
    assert (resumed[:, 0] == np.arange(20)).all()  # itself first


def test_knn_without_dropout_is_the_nearest_mean_colour(tmp_path):
    write_fixture("cocostuff27", tmp_path)
    path = precompute_knn("cocostuff27", tmp_path, "train", "vit-s8", MeanColour(), res=32, feature_dropout=0.0)
    ds = build_dataset("cocostuff27", tmp_path, "train", SegTransform(32, "center", "nearest"))
    desc = torch.stack([torch.nn.functional.adaptive_avg_pool2d(s["image"].float()[None] / 255, 2).mean((2, 3))[0]
                        for s in ds])
    desc = torch.nn.functional.normalize(desc, dim=1)
    sims = desc @ desc.T
    expected_second = [int(np.argsort(-row.numpy())[1]) for row in sims]
    assert load_knn(path)[:, 1].tolist() == expected_second
