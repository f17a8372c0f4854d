"""SAN: SEAT, the consistency sustainer's losses, the uniformity term, and the adapter's shapes."""

import math

import pytest
import torch

from uss_bench.methods.base import MethodContext
from uss_bench.methods.san.loss import orthogonality_loss, reconstruction_losses, seat
from uss_bench.methods.san.method import SAN
from uss_bench.methods.san.networks import ReconstructionDecoder

A = math.exp(1 / math.sqrt(2))  # exp(q.s / sqrt(d)) for q = s_0 = e_0, d = 2


def test_seat_is_softmax_attention_over_semantics():
    q = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # two pixels
    gamma = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # two semantics
    theta, attention = seat(q, gamma)
    w = A / (A + 1)
    assert attention[0].flatten().tolist() == pytest.approx([w, 1 - w, 0.5, 0.5])
    assert theta[0].flatten().tolist() == pytest.approx([w, 1 - w, 0.5, 0.5])  # Gamma = I: Theta = attention
    gamma2 = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])
    theta2, _ = seat(q[:, :1], gamma2)
    w2 = math.exp(2 / math.sqrt(2)) / (math.exp(2 / math.sqrt(2)) + 1)
    assert theta2[0, 0].tolist() == pytest.approx([2 * w2, 0.0])


def test_reconstruction_losses_share_one_decoder():
    decoder = ReconstructionDecoder(2, hidden=0)
    with torch.no_grad():
        decoder.net.weight.zero_()
        decoder.net.weight[0, 0] = decoder.net.weight[1, 1] = 1.0
        decoder.net.bias.zero_()
    q_map = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    w = A / (A + 1)
    theta_map = torch.tensor([w, 1 - w]).view(1, 2, 1, 1)
    target = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    rec, con = reconstruction_losses(decoder, q_map, theta_map, target)
    assert rec.item() == pytest.approx(0.0)
    assert con.item() == pytest.approx(2 * (1 - w) ** 2 / 3)


def test_orthogonality_loss_is_mean_squared_off_diagonal_cosine():
    assert orthogonality_loss(torch.eye(3)).item() == pytest.approx(0.0)
    assert orthogonality_loss(torch.tensor([[1.0, 0.0], [1.0, 1.0]])).item() == pytest.approx(0.5)


def _tiny_san(n_classes: int = 3) -> SAN:
    hparams = {"embedding_dim": 8, "n_semantics": None, "vit": {"dim": 16, "depth": 1, "heads": 2, "patch_size": 8,
               "img_size": 16}, "generator_hidden": 8, "decoder_hidden": 0, "batch_wise": True,
               "token_matcher": True, "loss_weights": {"rec": 1, "con": 1, "ortho": 1, "align": 0},
               "optimizer": {"lr": 1e-4}}
    ctx = MethodContext("synthetic", "san-vit", n_classes, 2, 10, 5, 16)
    return SAN(None, n_classes, hparams, ctx)


def test_san_step_embed_and_cluster_logits():
    torch.manual_seed(0)
    san = _tiny_san()
    images = torch.rand(2, 3, 16, 16)
    out = san.training_step({"image": images}, 0)
    assert set(out) == {"loss", "rec", "con", "ortho", "align", "code"}
    out["loss"].backward()
    assert all(p.grad is not None for p in san.encoder.parameters())
    assert san.generator.vit.vit.blocks[0].attn.qkv.weight.grad is not None
    san.eval()
    with torch.no_grad():
        code = san.embed(images)
        logits = san.cluster_logits(code)
    assert code.shape == (2, 8, 16, 16) and logits.shape == (2, 3, 16, 16)  # N = n_classes semantics
    _, attention = seat(code.flatten(2).transpose(1, 2), san._gamma)
    assert torch.equal(logits.argmax(1).flatten(1), attention.argmax(-1))
    with pytest.raises(RuntimeError, match="same batch"):
        san.cluster_logits(code[:1])
    groups = san.param_groups()
    assert groups[0]["optimizer"] == "adam" and groups[0]["lr"] == 1e-4
