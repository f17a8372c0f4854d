import json
import math

import pytest
import torch
import torch.nn.functional as F

from uss_bench.methods.base import MethodContext
from uss_bench.methods.hp.loss import (
    hidden_positive_loss,
    local_attention,
    local_mix,
    nearest_pool_similarity,
    neighbourhood_mask,
    symmetric_positives,
)
from uss_bench.methods.hp.method import HiddenPositives, lambda_ramp
from uss_bench.registry import BACKBONES

# Four patches of one image on the unit circle, and a two-entry reference pool.
F4 = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]], dtype=torch.float64)
POOL = torch.tensor([[0.6, 0.8], [-1.0, 0.0]], dtype=torch.float64)


def test_thresholds_are_the_similarity_to_the_nearest_pool_entry():
    # R_i = max(<f_i, (0.6,0.8)>, <f_i, (-1,0)>) = (0.6, 0.96, 0.8, 0.6)
    assert nearest_pool_similarity(F4, POOL).tolist() == pytest.approx([0.6, 0.96, 0.8, 0.6])


def test_positive_mask_is_symmetrised_with_or():
    r = nearest_pool_similarity(F4, POOL)
    sim = F4 @ F4.T  # off-diagonal: s01=.8 s02=0 s03=-.6 s12=.6 s13=0 s23=.8
    mask = symmetric_positives(sim, r, r) & ~torch.eye(4, dtype=torch.bool)
    # (0,1): .8 > R0=.6.  (1,0): .8 < R1=.96 but > R0, so OR keeps it.  (2,3): .8 is not > R2=.8 but > R3=.6.
    assert mask.int().tolist() == [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]
    one_sided = (sim > r[:, None]) & ~torch.eye(4, dtype=torch.bool)
    assert one_sided.int().tolist() == [[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]]


def test_loss_on_the_four_patch_example_by_hand():
    # z = f, tau = tau0 = 1, all negatives kept (rho = 1), lambda = 0. Each anchor has one positive j:
    # l_i = log sum_{k != i} e^{s_ik} - s_ij.
    l0 = math.log(math.exp(0.8) + math.exp(0.0) + math.exp(-0.6)) - 0.8  # 0.52824
    l1 = math.log(math.exp(0.8) + math.exp(0.6) + math.exp(0.0)) - 0.8  # 0.81893
    expected = (l0 + l1 + l1 + l0) / 4  # W_i = 1 for all, so pnm = 1
    keep = torch.ones(4, 4, dtype=torch.bool)
    out = hidden_positive_loss(F4, F4, F4, F4, POOL, POOL, lam=0.0, rho=1.0, tau=1.0, tau0=1.0,
                               patches_per_image=4, keep_negatives=keep)
    assert out["ghp"].item() == pytest.approx(expected, abs=1e-9)
    assert out["loss"].item() == pytest.approx(expected, abs=1e-9)  # (GHP + LHP) / 2 with z_mix = z
    # tau/tau0 scales the loss linearly in its prefactor
    out2 = hidden_positive_loss(F4, F4, F4, F4, POOL, POOL, lam=0.0, rho=1.0, tau=1.0, tau0=0.5,
                                patches_per_image=4, keep_negatives=keep)
    assert out2["loss"].item() == pytest.approx(2 * expected, abs=1e-9)
    # rho = 0: the denominator is the positive alone, so every term is log(1) = 0
    out3 = hidden_positive_loss(F4, F4, F4, F4, POOL, POOL, lam=0.0, rho=0.0, tau=1.0, tau0=1.0,
                                patches_per_image=4, keep_negatives=torch.zeros(4, 4, dtype=torch.bool))
    assert out3["loss"].item() == pytest.approx(0.0, abs=1e-12)


def naive_hp_loss(z, z_mix, f, s, pool_ag, pool_sp, lam, tau, tau0, hw, keep):
    """Whole-batch reference: one [N, N] matrix per quantity, anchors of each image averaged."""
    n = z.shape[0]
    r_ag = (f @ pool_ag.T).max(1).values
    r_sp = (s @ pool_sp.T).max(1).values
    eye = torch.eye(n, dtype=torch.bool)
    sim_f, sim_s = f @ f.T, s @ s.T
    m_ag = ((sim_f > r_ag[:, None]) | (sim_f > r_ag[None, :])) & ~eye
    m_sp = ((sim_s > r_sp[:, None]) | (sim_s > r_sp[None, :])) & ~eye
    denom = (m_ag | keep.repeat(n // hw, 1)) & ~eye
    total = 0.0
    for zz in (z, z_mix):
        logits = zz @ zz.T / tau
        for b in range(n // hw):
            per_image = []
            weights_sum = []
            for i in range(b * hw, (b + 1) * hw):
                if not m_ag[i].any():
                    continue
                w = m_ag[i].double() + lam * m_sp[i].double()
                log_norm = torch.log(torch.exp(logits[i])[denom[i]].sum())
                per_image.append(-(tau / tau0) * (w * (logits[i] - log_norm)).sum() / w.sum())
                weights_sum.append(w.sum())
            wsum = torch.stack(weights_sum)
            pnm = wsum / wsum.mean()
            total = total + (torch.stack(per_image) * pnm).mean()
    return total / (2 * (n // hw))


def test_per_image_blocks_equal_the_whole_batch_reference():
    torch.manual_seed(0)
    n_img, hw, d, dim = 3, 6, 5, 4
    n = n_img * hw
    f = F.normalize(torch.randn(n, d, dtype=torch.float64), dim=1)
    s = F.normalize(torch.randn(n, dim, dtype=torch.float64), dim=1)
    z = F.normalize(torch.randn(n, dim, dtype=torch.float64), dim=1)
    z_mix = F.normalize(torch.randn(n, dim, dtype=torch.float64), dim=1)
    pool_ag = F.normalize(torch.randn(7, d, dtype=torch.float64), dim=1)
    pool_sp = F.normalize(torch.randn(7, dim, dtype=torch.float64), dim=1)
    keep = torch.rand(hw, n) < 0.5
    out = hidden_positive_loss(z, z_mix, f, s, pool_ag, pool_sp, lam=0.3, rho=0.5, tau=0.8,
                               patches_per_image=hw, keep_negatives=keep)
    ref = naive_hp_loss(z, z_mix, f, s, pool_ag, pool_sp, 0.3, 0.8, 0.07, hw, keep)
    assert torch.allclose(out["loss"], ref, rtol=1e-12, atol=0)  # float64: equal up to summation order


def test_neighbourhood_mask_on_any_grid():
    mask = neighbourhood_mask(3, 4)
    counts = mask.sum(1).view(3, 4)
    assert counts.tolist() == [[4, 6, 6, 4], [6, 9, 9, 6], [4, 6, 6, 4]]
    assert torch.equal(mask, mask.T)
    assert neighbourhood_mask(28, 28).sum(1).unique().tolist() == [4, 6, 9]
    assert neighbourhood_mask(14, 14).shape == (196, 196)  # ViT-S/16 at 224


def test_local_mix_matmul_equals_the_per_image_broadcast_and_sends_gradient_to_neighbours():
    torch.manual_seed(0)
    b, c, h, w = 2, 3, 4, 5
    attn = torch.randn(b, 2, 1 + h * w, 1 + h * w, dtype=torch.float64)
    a = local_attention(attn, h, w, sigma=28.0)
    assert (a[:, ~neighbourhood_mask(h, w)] == 0).all() and (a >= 0).all()
    code = torch.randn(b, c, h, w, dtype=torch.float64, requires_grad=True)
    mixed = local_mix(code, a)
    counts = neighbourhood_mask(h, w).sum(1).double()
    flat = code.flatten(2).transpose(1, 2)
    for i in range(b):  # the official form: [hw, hw, C] product summed over the key axis
        ref = (a[i].unsqueeze(-1) * flat[i].unsqueeze(0)).sum(1) / counts[:, None]
        assert torch.allclose(mixed[i].flatten(1).T, ref, rtol=0, atol=1e-12)
    # gradient of s_mix at patch (1,1) reaches exactly its neighbours with non-zero weight
    mixed[0, :, 1, 1].sum().backward()
    touched = code.grad[0].abs().sum(0) > 0
    weights = a[0, 1 * w + 1].view(h, w) > 0
    assert torch.equal(touched, weights) and touched.sum() > 1


def test_lambda_ramp():
    assert lambda_ramp(0, 1000, 3000) == 0.0
    assert lambda_ramp(1000, 1000, 3000) == 0.0
    assert lambda_ramp(2000, 1000, 3000) == 0.5
    assert lambda_ramp(3000, 1000, 3000) == 1.0


class TinySet(torch.utils.data.Dataset):
    def __init__(self, n=12, size=32):
        g = torch.Generator().manual_seed(1)
        self.images = (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": torch.zeros(32, 32, dtype=torch.long), "id": str(i), "index": i}


def make_hp(backbone="vit-s8", **hparams):
    hp = {"dim": 8, "tau": 0.8, "alpha": 0.05, "rho": 0.5, "pool_size": 6, "ema_m": 0.9, "warmup": 1,
          "renew_interval": 2, **hparams}
    ctx = MethodContext(dataset="synthetic", backbone_name=backbone, n_classes=6, batch_size=4, total_steps=6,
                        steps_per_epoch=3, train_res=32)
    return HiddenPositives(BACKBONES.get(backbone).build(random_init=True), 6, hp, ctx)


@pytest.mark.parametrize("backbone", ["vit-s8", "vit-s16"])
def test_gradients_ema_and_pools(backbone):
    torch.manual_seed(0)
    method = make_hp(backbone)
    method.train()
    data = TinySet(size=32 if backbone == "vit-s8" else 64)
    method.on_train_start(data)
    # pool_size 6 with batch 4: two batches, 6 rows filled, each a unit vector
    assert torch.allclose(method.pool_ag.norm(dim=1), torch.ones(6))
    assert torch.allclose(method.pool_sp.norm(dim=1), torch.ones(6))
    pool_ag = method.pool_ag.clone()
    head_before = [p.detach().clone() for p in method.head.parameters()]
    ema_before = [p.detach().clone() for p in method.ema_head.parameters()]
    batch = {"image": data.images[:4].float() / 255, "index": torch.arange(4), "id": list("abcd")}
    out = method.training_step(batch, 2)  # in-epoch step 2: the task-specific pool is renewed first
    out["loss"].backward()
    assert torch.equal(method.pool_ag, pool_ag)  # the task-agnostic pool is fixed
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.head.parameters())
    assert all(p.grad is not None for p in method.projection.parameters())
    assert all(p.grad is None for p in method.ema_head.parameters())
    assert all(p.grad is None for p in method.backbone.parameters())
    for hb, eb, ea in zip(head_before, ema_before, method.ema_head.parameters()):
        assert torch.allclose(ea, 0.9 * eb + 0.1 * hb)
    assert "loss_consistency" in out and out["lambda"].item() == pytest.approx((2 - 1) / (6 - 1))


@pytest.mark.slow
def test_smoke_run_through_the_cli(tmp_path):
    from uss_bench.cli import main

    args = ["run", "--methods", "hp", "--datasets", "synthetic", "--preset", "smoke", "--results",
            str(tmp_path / "r"), "--data-root", str(tmp_path / "d"), "--set", "train.steps=5", "protocol.crf=false"]
    assert main(args) == 0
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "r" / "runs").glob("*.json")]
    assert record["status"] == "completed"
    assert math.isfinite(record["train"]["last_losses"]["loss"])


def test_recomputed_blocks_give_the_same_loss_and_gradients():
    torch.manual_seed(2)
    n, hw = 24, 8
    z = F.normalize(torch.randn(n, 4, dtype=torch.float64), dim=1).requires_grad_(True)
    zm = F.normalize(torch.randn(n, 4, dtype=torch.float64), dim=1).requires_grad_(True)
    f = F.normalize(torch.randn(n, 3, dtype=torch.float64), dim=1)
    pool = F.normalize(torch.randn(5, 3, dtype=torch.float64), dim=1)
    pool_s = F.normalize(torch.randn(5, 4, dtype=torch.float64), dim=1)
    keep = torch.rand(hw, n) < 0.3
    grads = []
    for recompute in (True, False):
        z.grad = zm.grad = None
        out = hidden_positive_loss(z, zm, f, z.detach(), pool, pool_s, lam=0.4, rho=0.3, tau=0.5,
                                   patches_per_image=hw, keep_negatives=keep, recompute=recompute)
        out["loss"].backward()
        grads.append((out["loss"].item(), z.grad.clone(), zm.grad.clone()))
    assert grads[0][0] == grads[1][0]
    assert torch.equal(grads[0][1], grads[1][1]) and torch.equal(grads[0][2], grads[1][2])


def test_resume_after_interruption_is_bit_identical(tmp_path):
    from uss_bench.eval.probes import Probes
    from uss_bench.train import TrainSettings, seed_everything, train

    data = TinySet(n=8)
    settings = TrainSettings(steps=4, batch_size=4, linear_lr=1e-3, cluster_lr=1e-3, checkpoint_every=2)

    def fresh():
        seed_everything(0)
        method = make_hp(renew_interval=1)  # 2 steps per epoch: the pool is renewed at every odd step
        method.context.total_steps, method.context.steps_per_epoch = 4, 2
        return method, Probes(method.embed_dim, 6)

    method, probes = fresh()
    train(method, probes, data, settings, torch.device("cpu"))
    reference = {k: v.clone() for k, v in method.state_dict().items()}

    method, probes = fresh()
    original = method.training_step

    def interrupted(batch, step):
        if step == 3:
            raise KeyboardInterrupt
        return original(batch, step)

    method.training_step = interrupted
    ckpt = tmp_path / "last.pt"
    with pytest.raises(KeyboardInterrupt):
        train(method, probes, data, settings, torch.device("cpu"), checkpoint_path=ckpt)
    method, probes = fresh()  # a new process: pools and EMA come from the checkpoint
    result = train(method, probes, data, settings, torch.device("cpu"), checkpoint_path=ckpt)
    assert result.resumed_from == 2
    for key, value in reference.items():
        assert torch.equal(method.state_dict()[key], value), key


def test_half_precision_products_keep_the_loss_within_1e3_of_float64():
    # Under autocast the similarity products run in fp16 (the official AMP); statistics stay fp32.
    # CPU autocast with fp16 exercises the same code path as CUDA's.
    torch.manual_seed(0)
    hw, n = 64, 256

    def unit(rows, d):
        return F.normalize(torch.randn(rows, d) + 2 * torch.randn(1, d), dim=1)

    z, zm, f, s = unit(n, 32).requires_grad_(True), unit(n, 32).requires_grad_(True), unit(n, 24), unit(n, 32)
    pool_ag, pool_sp = unit(50, 24), unit(50, 32)
    keep = torch.rand(hw, n) < 0.1
    with torch.autocast("cpu", dtype=torch.float16):
        half = hidden_positive_loss(z, zm, f, s, pool_ag, pool_sp, lam=0.5, rho=0.1, tau=0.8, patches_per_image=hw,
                                    keep_negatives=keep)
    half["loss"].backward()
    z64, zm64 = z.detach().double().requires_grad_(True), zm.detach().double().requires_grad_(True)
    exact = hidden_positive_loss(z64, zm64, f.double(), s.double(), pool_ag.double(), pool_sp.double(), lam=0.5,
                                 rho=0.1, tau=0.8, patches_per_image=hw, keep_negatives=keep)
    exact["loss"].backward()
    single = hidden_positive_loss(z, zm, f, s, pool_ag, pool_sp, lam=0.5, rho=0.1, tau=0.8, patches_per_image=hw,
                                  keep_negatives=keep)
    assert half["loss"].dtype == torch.float32
    assert half["loss"].item() != single["loss"].item()  # the products did run in fp16
    assert abs(half["loss"].item() / exact["loss"].item() - 1) < 1e-3
    assert (z.grad.double() - z64.grad).norm() / z64.grad.norm() < 0.02
