import json
import math

import pytest
import torch

from uss_bench.methods.base import MethodContext
from uss_bench.methods.iic.loss import displaced_joints, iid_segmentation_loss
from uss_bench.methods.iic.method import IIC, InputStage
from uss_bench.registry import load_all

load_all()
LN2 = math.log(2.0)


def onehot(classes: list[list[int]], k: int) -> torch.Tensor:
    """[H][W] cluster ids -> [1, k, H, W] one-hot map (float64)."""
    return torch.nn.functional.one_hot(torch.tensor(classes), k).permute(2, 0, 1)[None].double()


def test_identical_hard_assignments_give_minus_log2():
    # two pixels, one per cluster, same in both views: P = diag(.5, .5), MI = ln 2
    x = onehot([[0, 1]], 2)
    loss, no_lamb = iid_segmentation_loss(x, x.clone(), lamb=1.0, half_window=0)
    assert loss.item() == pytest.approx(-LN2, abs=1e-12)
    assert no_lamb.item() == pytest.approx(-LN2, abs=1e-12)


def test_lambda_weights_the_marginals():
    # loss = -sum P (ln P - lam ln P_i - lam ln P_j) = -(ln .5 - 2 lam ln .5) = ln2 (1 - 2 lam); lam 1.5 -> -2 ln2
    x = onehot([[0, 1]], 2)
    loss, no_lamb = iid_segmentation_loss(x, x.clone(), lamb=1.5, half_window=0)
    assert loss.item() == pytest.approx(-2 * LN2, abs=1e-12)
    assert no_lamb.item() == pytest.approx(-LN2, abs=1e-12)  # the lambda-free value is still -MI


def test_soft_single_pixel_mutual_information_by_hand():
    # phi1 = (.8, .2), phi2 = (.6, .4): J = [[.48, .32], [.12, .08]] -> symmetrised [[.48, .22], [.22, .08]],
    # marginals (.7, .3). MI = .48 ln(.48/.49) + 2 (.22) ln(.22/.21) + .08 ln(.08/.09)
    #                        = -0.0098971 + 0.0204688 - 0.0094226 = 0.0011489
    x1 = torch.tensor([0.8, 0.2], dtype=torch.float64).view(1, 2, 1, 1)
    x2 = torch.tensor([0.6, 0.4], dtype=torch.float64).view(1, 2, 1, 1)
    mi = 0.48 * math.log(0.48 / 0.49) + 0.44 * math.log(0.22 / 0.21) + 0.08 * math.log(0.08 / 0.09)
    assert mi == pytest.approx(0.0011489, abs=1e-6)
    loss, _ = iid_segmentation_loss(x1, x2, lamb=1.0, half_window=0)
    assert loss.item() == pytest.approx(-mi, abs=1e-12)


def test_independent_views_have_zero_information():
    x1 = torch.full((1, 3, 2, 2), 1 / 3, dtype=torch.float64)
    loss, _ = iid_segmentation_loss(x1, x1.clone(), lamb=1.0, half_window=0)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_displaced_joints_of_a_known_pattern():
    # one row, classes [0, 1, 1] in both maps. J(t)_ij = sum_p a_i(p + t) b_j(p):
    # t = 0: [[1, 0], [0, 2]]; t = +1: (a1,b0), (a2,b1) -> [[0, 0], [1, 1]];
    # t = -1: (a0,b1), (a1,b2) -> [[0, 1], [0, 1]]
    a = onehot([[0, 1, 1]], 2)
    joints = displaced_joints(a, a.clone(), half_window=1)  # [3, 3, 2, 2]
    assert joints[1, 1].tolist() == [[1, 0], [0, 2]]
    assert joints[1, 2].tolist() == [[0, 0], [1, 1]]
    assert joints[1, 0].tolist() == [[0, 1], [0, 1]]
    assert joints[0].abs().sum() == 0 and joints[2].abs().sum() == 0  # a single row: no vertical overlap


def test_a_known_shift_gives_a_diagonal_joint_at_that_displacement():
    # b is a shifted right by one pixel: b(p) = a(p - 1), so J(0, -1) pairs a(p-1) with itself
    classes = [[0, 1, 2, 2, 0], [1, 1, 0, 2, 2], [2, 0, 0, 1, 1]]
    a = onehot(classes, 3)
    b = torch.zeros_like(a)
    b[..., 1:] = a[..., :-1]
    joints = displaced_joints(a, b, half_window=1)
    j = joints[1, 0]  # dy = 0, dx = -1
    assert torch.equal(j, torch.diag(j.diagonal()))
    counts = torch.bincount(torch.tensor(classes)[:, :-1].flatten(), minlength=3).double()
    assert j.diagonal().tolist() == counts.tolist()


def test_uncollapsed_loss_is_the_mean_of_per_displacement_losses():
    torch.manual_seed(0)
    x1 = torch.softmax(torch.randn(2, 3, 5, 5, dtype=torch.float64), 1)
    x2 = torch.softmax(torch.randn(2, 3, 5, 5, dtype=torch.float64), 1)
    d, lam = 1, 1.3
    per_t = []
    for dy in range(-d, d + 1):
        for dx in range(-d, d + 1):
            # J(t)_ij = sum over p with p + t inside of x1_i(p + t) x2_j(p), written as explicit slices
            ys1, ys2 = slice(max(dy, 0), 5 + min(dy, 0)), slice(max(-dy, 0), 5 + min(-dy, 0))
            xs1, xs2 = slice(max(dx, 0), 5 + min(dx, 0)), slice(max(-dx, 0), 5 + min(-dx, 0))
            j = torch.einsum("bihw,bjhw->ij", x1[:, :, ys1, xs1], x2[:, :, ys2, xs2])
            p = j / j.sum()
            p = (p + p.T) / 2
            pi, pj = p.sum(1, keepdim=True), p.sum(0, keepdim=True)
            per_t.append(-(p * (p.log() - lam * pi.log() - lam * pj.log())).sum())
    loss, _ = iid_segmentation_loss(x1, x2, lamb=lam, half_window=d)
    assert loss.item() == pytest.approx(torch.stack(per_t).mean().item(), abs=1e-12)
    collapsed, _ = iid_segmentation_loss(x1, x2, lamb=lam, half_window=d, collapsed=True)
    assert collapsed.item() != pytest.approx(loss.item(), abs=1e-9)  # the two forms normalise differently


def test_mask_removes_pixels_from_the_joint():
    x = onehot([[0, 1, 1, 0]], 2)
    mask = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]], dtype=torch.float64)
    loss, _ = iid_segmentation_loss(x, x.clone(), lamb=1.0, half_window=0, mask=mask)
    assert loss.item() == pytest.approx(-LN2, abs=1e-12)  # only pixels (0, 1) remain


def test_sobel_input_stage_by_hand():
    stage = InputStage("rgb_sobel", bgr=False)
    img = torch.zeros(1, 3, 3, 3)
    img[..., 2] = 1.0  # right column white: grey = 1 there
    out = stage(img)
    assert out.shape == (1, 5, 3, 3)
    # centre: x kernel [[1,0,-1],[2,0,-2],[1,0,-1]] on grey columns (0, 0, 1) -> -(1 + 2 + 1) = -4
    assert out[0, 3, 1, 1].item() == pytest.approx(-4.0 * (0.299 + 0.587 + 0.114))
    assert out[0, 4, 1, 1].item() == pytest.approx(0.0)
    bgr = InputStage("rgb_sobel", bgr=True)(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
    assert bgr[0, :3, 0, 0].tolist() == [0.0, 0.0, 1.0]  # colour channels reversed (OpenCV order)
    with pytest.raises(ValueError, match="rgbir"):
        InputStage("rgbir", bgr=False)(torch.zeros(1, 3, 4, 4))


def _iic(**over):
    hparams = dict(input="rgb_sobel", bgr=True, width=0.125, batchnorm_track=True, output_k_A=None,
                   overcluster_factor=3, output_k_B=None, num_sub_heads=2, eval_sub_head=0, lamb_A=1.0, lamb_B=1.5,
                   lr=1e-4, half_T_side_dense=2, uncollapsed=True, head_B_first=False, crop_size=None,
                   jitter=[0.4, 0.4, 0.4, 0.125], flip_p=0.5, grey="opencv3", jitter_bgr_as_rgb=True)
    hparams.update(over)
    ctx = MethodContext("synthetic", "vgg-iic", 4, 2, 8, 4, 32)
    return IIC(None, 4, hparams, ctx)


def test_trunk_geometry_heads_and_alternation():
    torch.manual_seed(0)
    m = _iic()
    x = torch.rand(2, 3, 32, 32)
    code = m.embed(x)
    assert code.shape == (2, m.trunk.dim, 14, 14)  # 32 -> 16 (pool) -> 14 -> 12 (dilated, padding 1) + 2 border
    assert code[..., 0, :].abs().sum() == 0  # the heads' padding=1 border
    assert m.cluster_logits(code).shape == (2, 4, 14, 14)
    assert len(m.head_a.convs) == 2 and m.head_a.convs[0].out_channels == 12  # 3 x classes
    # segmentation_twohead.py: heads = ["A", "B"] per epoch (steps_per_epoch = 4 here)
    assert [m.head_for_step(s) for s in (0, 3, 4, 7, 8)] == ["A", "A", "B", "B", "A"]
    assert [_iic(head_B_first=True).head_for_step(s) for s in (0, 4)] == ["B", "A"]
    out = m.training_step({"image": x, "index": torch.arange(2), "id": ["a", "b"]}, step=0)
    assert "iid_A" in out and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert m.head_a.convs[1].weight.grad is not None and m.head_b.convs[0].weight.grad is None
    with pytest.raises(ValueError, match="output_k_B"):
        _iic(output_k_B=5)


def test_second_view_is_flipped_back_before_the_loss():
    torch.manual_seed(0)
    m = _iic(jitter=[0.0, 0.0, 0.0, 0.0], flip_p=1.0)
    x = torch.randint(0, 256, (2, 3, 32, 32)) / 255.0  # images arrive as uint8 levels (the jitter output is too)
    img1, img2, flipped = m.make_pair(x)
    assert flipped.all() and torch.allclose(img2, img1.flip(-1))


@pytest.mark.slow
def test_smoke_run_through_the_cli(tmp_path):
    from uss_bench.cli import main

    args = ["run", "--methods", "iic", "--datasets", "synthetic", "--preset", "smoke", "--protocol", "iic",
            "--results", str(tmp_path / "r"), "--data-root", str(tmp_path / "d"), "--set", "train.steps=4"]
    assert main(args) == 0
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "r" / "runs").glob("*.json")]
    assert record["status"] == "completed"
    assert record["protocol"]["eval_split"] == "train"
    assert record["train"]["n_eval_images"] == record["train"]["n_train_images"]  # transductive
    assert math.isfinite(record["train"]["last_losses"]["loss"])


def test_potsdam_runs_get_the_ir_channel(tmp_path):
    """The runner builds IIC's Potsdam datasets with channels=rgbir (card: input rgbir)."""
    from uss_bench.cli import main
    from uss_bench.data.fixtures import write_fixture
    from uss_bench.methods.iic.method import IIC

    assert IIC.dataset_options({"input": "rgbir"}) == {"channels": "rgbir"}
    assert IIC.dataset_options({"input": "rgb_sobel"}) == {}
    write_fixture("potsdam3", tmp_path / "data")
    code = main(["run", "--methods", "iic", "--datasets", "potsdam3", "--preset", "smoke", "--random-init",
                 "--executor", "inline", "--results", str(tmp_path / "r"), "--data-root", str(tmp_path / "data"),
                 "--set", "protocol.crf=false", "train.batch_size=2", "train.steps=2"])
    assert code == 0
