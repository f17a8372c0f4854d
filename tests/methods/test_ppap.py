import json
import math

import pytest
import torch
import torch.nn.functional as F

from uss_bench.methods.base import MethodContext
from uss_bench.methods.ppap.loss import Propagation, anchor_loss, ppap_loss, propagate
from uss_bench.methods.ppap.method import ProxyAnchorPropagation
from uss_bench.registry import BACKBONES

DEG = [0.0, 20.0, 40.0, 60.0, 90.0, 180.0]
POINTS = torch.tensor([[math.cos(math.radians(a)), math.sin(math.radians(a))] for a in DEG], dtype=torch.float64)
C10 = math.cos(math.radians(10))  # every step moves the proxy by 10 degrees in this example


def sets_after(steps):
    p = Propagation(phi0=0.9, psi0=0.2, sigma_pos=0.1, sigma_amb=0.1, steps=steps)
    return propagate(POINTS[:1], POINTS, p)


def test_propagation_on_six_points_of_the_circle_by_hand():
    # T=0: cos to the anchor (0 deg) = 1, .940, .766, .5, 0, -1; Phi0 = .9 keeps {0, 20}.
    s0 = sets_after(0)
    assert s0.positives[0].tolist() == [True, True, False, False, False, False]
    # T=1: proxy = direction of 0+20 = 10 deg; delta = 1 - cos 10 = .0152; Phi = .9 - delta/.1 = .748,
    # Psi = .2 + delta/.1 = .352; c = cos(a - 10) = .985 .985 .866 .643 .174 -.985.
    s1 = sets_after(1)
    delta = 1 - C10
    assert s1.phi.item() == pytest.approx(0.9 - delta / 0.1) and s1.psi.item() == pytest.approx(0.2 + delta / 0.1)
    assert s1.positives[0].tolist() == [True, True, True, False, False, False]  # P = {20, 40} besides self
    assert s1.negatives[0].tolist() == [False, False, False, False, True, True]  # N = {90, 180}
    # 60 deg (c = .643) lies in the ambiguous zone [Psi, Phi] = [.352, .748]: neither positive nor negative
    # T=2: proxy = direction of 0+20+40 = 20 deg, again 10 deg away; Phi = .596, Psi = .504;
    # c = cos(a - 20) = .940 1 .940 .766 .342 -.940: P = {20, 40, 60}, N = {90, 180}, no ambiguous sample.
    s2 = sets_after(2)
    assert s2.phi.item() == pytest.approx(0.9 - 2 * delta / 0.1)
    assert s2.positives[0].tolist() == [True, True, True, True, False, False]
    assert s2.negatives[0].tolist() == [False, False, False, False, True, True]
    assert s2.proxy_sim[0, 1].item() == pytest.approx(1.0)


def test_loss_after_one_step_by_hand():
    # z = f, tau = tau0 = 1: P = {20, 40}, D = {20, 40, 90, 180}; s = cos of the angle to 0 deg.
    s = [math.cos(math.radians(a)) for a in DEG]
    lse = math.log(math.exp(s[1]) + math.exp(s[2]) + math.exp(s[4]) + math.exp(s[5]))
    expected = -((s[1] - lse) + (s[2] - lse)) / 2  # 0.9519
    loss, counts = anchor_loss(POINTS[:1], POINTS, sets_after(1), torch.tensor([0]), tau=1.0, tau0=1.0)
    assert counts.tolist() == [2]
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.9519, abs=1e-4)


def naive_propagate(f_anchor, f_all, p):
    """The official form: the proxy is the mean over N of the masked [n, N, D] broadcast."""
    sim = f_anchor @ f_all.T
    mask = (sim > p.phi0).double()
    prev, phi = f_anchor, torch.full((len(f_anchor), 1), p.phi0, dtype=torch.float64)
    psi = torch.full_like(phi, p.psi0)
    for _ in range(p.steps):
        proxy = F.normalize((f_all.unsqueeze(0) * mask.unsqueeze(-1)).mean(dim=1), dim=1)
        sim = proxy @ f_all.T
        move = 1 - F.cosine_similarity(prev, proxy)
        psi, phi = psi + move.unsqueeze(-1) / p.sigma_amb, phi - move.unsqueeze(-1) / p.sigma_pos
        mask = (phi < sim).double()
        prev = proxy
    return mask.bool(), psi > sim, sim


def test_matmul_proxy_equals_the_broadcast_mean_on_random_inputs():
    torch.manual_seed(0)
    f = F.normalize(torch.randn(300, 16, dtype=torch.float64), dim=1)
    p = Propagation(phi0=0.3, psi0=0.0, sigma_pos=3, sigma_amb=3, steps=3)
    sets = propagate(f[:20], f, p)
    pos, neg, sim = naive_propagate(f[:20], f, p)
    assert torch.allclose(sets.proxy_sim, sim, rtol=0, atol=1e-12)
    assert torch.equal(sets.positives, pos) and torch.equal(sets.negatives, neg)


def naive_loss(z, f, p, tau, tau0, blocks):
    """Anchor by anchor with explicit index sets; blocks = list of global anchor index tensors."""
    per_block = []
    for index in blocks:
        terms = []
        for a in index.tolist():
            pos, neg, _ = naive_propagate(f[a : a + 1], f, p)
            pos, neg = pos[0].clone(), neg[0].clone()
            pos[a] = False
            denom = pos | neg
            denom[a] = False
            if not pos.any():
                continue
            s = z[a] @ z.T / tau
            lse = torch.logsumexp(s[denom], dim=0)
            terms.append(-(tau / tau0) * (s[pos] - lse).mean())
        if terms:
            per_block.append(torch.stack(terms).mean())
    return torch.stack(per_block).sum() / len(blocks)


def test_blocked_loss_equals_the_anchor_by_anchor_reference():
    torch.manual_seed(1)
    hw, images = 16, 5  # block_patches 32 -> blocks of 2 images; the last block holds one image
    f = F.normalize(torch.randn(hw * images, 6, dtype=torch.float64), dim=1)
    z = F.normalize(torch.randn(hw * images, 4, dtype=torch.float64), dim=1)
    p = Propagation(phi0=0.5, psi0=0.0, sigma_pos=3, sigma_amb=3, steps=2)
    anchors = [torch.tensor([0, 5, 17, 30]), torch.tensor([3, 9, 20, 31]), torch.tensor([1, 14])]
    out = ppap_loss(z, f, p, tau=0.8, patches_per_image=hw, patch_split=8, block_patches=32, anchors=anchors)
    starts = [0, 32, 64]
    ref = naive_loss(z, f, p, 0.8, 0.07, [a + s for a, s in zip(anchors, starts)])
    assert torch.allclose(out["loss"], ref, rtol=1e-12, atol=0)


def make_ppap(backbone="vit-s8"):
    hp = {"phi0": 0.0, "psi0": -0.2, "sigma_pos": 3, "sigma_amb": 3, "prop_steps": 2, "tau": 0.8,
          "patch_split": 4, "lr": 1e-3}
    ctx = MethodContext(dataset="synthetic", backbone_name=backbone, n_classes=6, batch_size=2, total_steps=4,
                        steps_per_epoch=2, train_res=32)
    return ProxyAnchorPropagation(BACKBONES.get(backbone).build(random_init=True), 6, hp, ctx)


def test_only_the_last_block_copy_and_projection_train():
    torch.manual_seed(0)
    method = make_ppap()
    method.train()
    # the copy starts equal to the frozen last block, so the code equals the frozen features at first
    images = torch.rand(2, 3, 32, 32)
    code, f = method.streams(images)
    assert torch.allclose(code, f, atol=1e-5)
    out = method.training_step({"image": images, "index": torch.arange(2), "id": ["a", "b"]}, 0)
    out["loss"].backward()
    assert all(p.grad is not None for p in method.block.parameters())
    assert all(p.grad is not None for p in method.projection.parameters())
    assert all(p.grad is None for p in method.backbone.parameters())  # frozen ViT incl. its final norm
    assert out["code"].shape == (2, 384, 4, 4)
    assert method.block is not method.backbone.vit.blocks[-1]


@pytest.mark.slow
def test_smoke_run_through_the_cli(tmp_path):
    from uss_bench.cli import main

    args = ["run", "--methods", "ppap", "--datasets", "synthetic", "--preset", "smoke", "--results",
            str(tmp_path / "r"), "--data-root", str(tmp_path / "d"), "--set", "train.steps=4", "protocol.crf=false"]
    assert main(args) == 0
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "r" / "runs").glob("*.json")]
    assert record["status"] == "completed"
    assert {"loss", "num_positives", "num_negatives"} <= set(record["train"]["last_losses"])


def test_recomputed_blocks_give_the_same_loss_and_gradients():
    torch.manual_seed(3)
    f = F.normalize(torch.randn(48, 6, dtype=torch.float64), dim=1)
    z = F.normalize(torch.randn(48, 5, dtype=torch.float64), dim=1).requires_grad_(True)
    p = Propagation(phi0=0.4, psi0=0.0, sigma_pos=3, sigma_amb=3, steps=2)
    anchors = [torch.tensor([1, 4, 9]), torch.tensor([0, 2, 15])]
    results = []
    for recompute in (True, False):
        z.grad = None
        out = ppap_loss(z, f, p, tau=0.8, patches_per_image=12, block_patches=24, anchors=anchors,
                        recompute=recompute)
        out["loss"].backward()
        results.append((out["loss"].item(), z.grad.clone()))
    assert results[0][0] == results[1][0] and torch.equal(results[0][1], results[1][1])
