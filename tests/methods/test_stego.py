import json
import math

import numpy as np
import pytest
import torch

from uss_bench.data.knn import MissingKnnError, knn_path, load_knn, nearest_neighbours, save_knn
from uss_bench.methods.base import MethodContext
from uss_bench.methods.stego.loss import (
    PairWeights,
    center,
    correlation,
    correspondence_loss,
    derangement,
    pair_loss,
)
from uss_bench.methods.stego.method import Stego, knn_table_path
from uss_bench.registry import BACKBONES

R = 1 / math.sqrt(2)
# Four code/feature vectors on a 2x2 grid: (1,0) (0,1) / (1,1)/sqrt2 (-1,0)
GRID = torch.tensor([[[1.0, 0.0], [1.0, -1.0]], [[0.0, 1.0], [1.0, 0.0]]])[None]  # [1, C=2, 2, 2]
# Hand-worked: row means of F per point (h,w) and the global mean (sum 2+2R over 16 entries).
ROW_MEANS = {(0, 0): R / 4, (0, 1): (1 + R) / 4, (1, 0): (1 + R) / 4, (1, 1): -R / 4}
GLOBAL_MEAN = (2 + 2 * R) / 16


def test_correlation_of_2x2_samples():
    fd = correlation(GRID, GRID)[0]
    assert fd.shape == (2, 2, 2, 2)
    assert fd[0, 0].flatten().tolist() == pytest.approx([1, 0, R, -1], abs=1e-6)
    assert fd[1, 0].flatten().tolist() == pytest.approx([R, R, 1, -R], abs=1e-6)
    assert fd.mean().item() == pytest.approx(GLOBAL_MEAN, abs=1e-6)


def test_official_centring_adds_back_the_global_mean_and_paper_does_not():
    fd = correlation(GRID, GRID)
    official, paper = center(fd, "official")[0], center(fd, "paper")[0]
    assert official[0, 0, 0, 0].item() == pytest.approx(1 - ROW_MEANS[0, 0] + GLOBAL_MEAN, abs=1e-6)  # 1.03661
    assert official[0, 0, 0, 0].item() == pytest.approx(1.036612, abs=1e-5)
    assert paper[0, 0, 0, 0].item() == pytest.approx(1 - ROW_MEANS[0, 0], abs=1e-6)  # 0.82322
    assert paper[1, 1].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert official.mean().item() == pytest.approx(GLOBAL_MEAN, abs=1e-6)
    assert torch.equal(center(fd, "none"), fd)
    with pytest.raises(ValueError, match="centering"):
        center(fd, "bogus")


def test_zero_clamp_and_shift_by_hand():
    # S = F here; negative S entries are clamped to 0 and contribute nothing.
    loss, cd = pair_loss(GRID, GRID, GRID, GRID, shift=0.0)
    assert loss[0, 1, 1, 0, 0].item() == 0.0  # S = -1
    assert loss[0, 0, 0, 0, 0].item() == pytest.approx(-1.036612, abs=1e-5)
    # the 8 positive entries worked out by hand: sum S * F_centred = 5.57318
    assert loss.mean().item() == pytest.approx(-5.57318 / 16, abs=1e-4)
    shifted, _ = pair_loss(GRID, GRID, GRID, GRID, shift=0.1)
    assert shifted[0, 0, 0, 0, 0].item() == pytest.approx(-(1.036612 - 0.1), abs=1e-5)
    unclamped, _ = pair_loss(GRID, GRID, GRID, GRID, shift=0.0, zero_clamp=False)
    assert unclamped[0, 1, 1, 0, 0].item() == pytest.approx(-1 - ROW_MEANS[1, 1] + GLOBAL_MEAN, abs=1e-5)  # -S*Fc, S=-1


def test_feature_correlation_carries_no_gradient_but_code_does():
    f = torch.randn(2, 4, 3, 3, requires_grad=True)
    c = torch.randn(2, 3, 3, 3, requires_grad=True)
    pair_loss(f, f, c, c, 0.1)[0].mean().backward()
    assert f.grad is None and c.grad is not None and c.grad.abs().sum() > 0


def test_derangement_has_no_fixed_points():
    # Like STEGO's super_perm, bumped fixed points may collide, so it is not always a permutation.
    for n in (2, 3, 8):
        for _ in range(50):
            perm = derangement(n)
            assert (perm != torch.arange(n)).all() and perm.min() >= 0 and perm.max() < n


def test_total_is_the_weighted_sum_of_the_parts():
    torch.manual_seed(0)
    w = PairWeights(self_shift=0.18, knn_shift=0.12, rand_shift=0.46, self_weight=0.67, knn_weight=0.25,
                    rand_weight=0.63)
    f, fp = torch.randn(4, 8, 5, 5), torch.randn(4, 8, 5, 5)
    c, cp = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    out = correspondence_loss(f, fp, c, cp, w)
    expected = 0.67 * out["self"] + 0.25 * out["knn"] + 0.63 * out["rand"]
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def make_stego(dataset="synthetic", data_root=None, **hparams):
    backbone = BACKBONES.get("vit-s8").build(random_init=True)
    hp = {"dim": 7, "self_shift": 0.18, "knn_shift": 0.12, "rand_shift": 0.46, "self_weight": 0.67,
          "knn_weight": 0.25, "rand_weight": 0.63, **hparams}
    ctx = MethodContext(dataset=dataset, backbone_name="vit-s8", n_classes=6, batch_size=4, total_steps=10,
                        steps_per_epoch=2, train_res=32, data_root=data_root)
    return Stego(backbone, 6, hp, ctx)


class TinySet(torch.utils.data.Dataset):
    def __init__(self, n=10, size=32):
        g = torch.Generator().manual_seed(0)
        self.images = (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": torch.zeros(32, 32, dtype=torch.long), "id": str(i), "index": i}


def test_only_the_head_receives_gradients_and_knn_positive_is_never_self():
    torch.manual_seed(0)
    method = make_stego()
    method.train()
    data = TinySet()
    method.on_train_start(data)
    assert method.nns.shape == (10, 10) and torch.equal(method.nns[:, 0], torch.arange(10))
    batch = {"image": data.images[:4].float() / 255, "index": torch.arange(4), "id": list("abcd")}
    out = method.training_step(batch, 0)
    out["loss"].backward()
    assert out["code"].shape == (4, 7, 4, 4)
    assert all(p.grad is not None for p in method.head.parameters())
    assert all(p.grad is None for p in method.backbone.parameters())
    # picks come from nns columns 1..7 only
    picked = []
    original = method.train_set.__class__.__getitem__

    def spy(self, i):
        picked.append(i)
        return original(self, i)

    method.train_set.__class__.__getitem__ = spy
    try:
        for _ in range(30):
            method.positive_images(torch.tensor([3]))
    finally:
        method.train_set.__class__.__getitem__ = original
    allowed = set(method.nns[3, 1:8].tolist())
    assert set(picked) <= allowed and 3 not in picked


def test_knn_file_names_include_backbone_and_patch_size(tmp_path):
    p8 = knn_path(tmp_path, "cocostuff27", "train", "vit-s8", "five", 224)
    p16 = knn_path(tmp_path, "cocostuff27", "train", "vit-s16", "five", 224)
    assert p8.name == "nns_vit-s8_cocostuff27_train_five_224.npz" and p8 != p16
    assert knn_table_path(tmp_path, "cityscapes27", "train_five_crop_0.5", "vit-b8", 224).name == \
        "nns_vit-b8_cityscapes27_train_five_224.npz"
    assert knn_table_path(tmp_path, "potsdam3", "train", "vit-s8", 224).name == "nns_vit-s8_potsdam3_train_None_224.npz"
    table = nearest_neighbours(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), k=3)
    assert table.tolist() == [[0, 1, 2], [1, 0, 2], [2, 1, 0]]
    save_knn(p8, table)
    loaded = load_knn(p8)
    assert loaded.dtype == np.int64 and loaded.tolist() == table.tolist()


def test_missing_knn_file_fails_up_front_naming_file_and_command(tmp_path):
    with pytest.raises(MissingKnnError) as err:
        make_stego(dataset="cocostuff27", data_root=tmp_path)
    message = str(err.value)
    assert "nns_vit-s8_cocostuff27_train_None_32.npz" in message
    assert "uss-bench datasets prepare cocostuff27 --what knn --splits train --backbone vit-s8" in message


@pytest.mark.slow
def test_smoke_run_through_the_cli(tmp_path):
    from uss_bench.cli import main

    args = ["run", "--methods", "stego", "--datasets", "synthetic", "--preset", "smoke", "--results",
            str(tmp_path / "r"), "--data-root", str(tmp_path / "d"), "--set", "train.steps=3", "protocol.crf=false"]
    assert main(args) == 0
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "r" / "runs").glob("*.json")]
    assert record["status"] == "completed"
    assert {"loss", "loss_self", "loss_knn", "loss_rand"} <= set(record["train"]["last_losses"])
    assert math.isfinite(record["train"]["last_losses"]["loss"])
