"""HSG's training budget: the official LR policies, and the shared loop's gradient accumulation and
schedule hook (opt-in features of uss_bench/train.py that HSG uses)."""

import pytest
import torch
from torch import nn

from uss_bench.data.build import build_dataset
from uss_bench.data.transforms import SegTransform
from uss_bench.eval.probes import Probes
from uss_bench.methods.base import MethodAdapter, MethodContext
from uss_bench.methods.hsg.schedule import lr_factor, poly_factor, step_factor
from uss_bench.train import TrainSettings, seed_everything, train


def test_step_policy_warmup_and_decays_hand_worked():
    total = 20000  # COCO stage 2; decays at int(.32 T) = 6400, 11200, 15000
    assert step_factor(0, total) == pytest.approx(0.1)  # warm-up starts at base_lr / 10
    assert step_factor(50, total) == pytest.approx(0.55)  # 0.1 (1 - .5) + .5
    assert step_factor(99, total) == pytest.approx(0.991)
    assert step_factor(100, total) == 1.0
    assert step_factor(6399, total) == 1.0 and step_factor(6400, total) == pytest.approx(0.1)
    assert step_factor(11200, total) == pytest.approx(0.01) and step_factor(14999, total) == pytest.approx(0.01)
    assert step_factor(15000, total) == pytest.approx(0.001) and step_factor(19999, total) == pytest.approx(0.001)


def test_poly_policy_and_unknown_policy():
    assert poly_factor(10, 1000) == pytest.approx(0.19)  # warm-up ramp 0.19 < (0.99)^0.9
    assert poly_factor(500, 1000) == pytest.approx(0.5 ** 0.9)
    assert poly_factor(5, 10, warmup=100) == pytest.approx(min(0.145, 0.5 ** 0.9))
    assert lr_factor("constant", 7, 10, 100) == 1.0
    with pytest.raises(ValueError, match="lr_schedule.policy"):
        lr_factor("cosine", 0, 10, 100)


class LinearMethod(MethodAdapter):
    """code = 1x1 conv of the image; loss = mean squared code (per-sample mean, so micro-batch means
    of equal size average to the full-batch mean)."""

    name = "linear-toy"

    def __init__(self, factor=None):
        super().__init__(None, 6, {}, MethodContext("synthetic", "none", 6, 4, 3, 1, 16))
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 1)
        self.batches: list[int] = []
        self.steps_seen: list[int] = []
        if factor is not None:
            self.lr_factor = factor

    @property
    def embed_dim(self):
        return 4

    def embed(self, images):
        return self.conv(images)

    def training_step(self, batch, step):
        self.batches.append(batch["image"].shape[0])
        code = self.embed(batch["image"])
        return {"loss": code.pow(2).mean(), "code": code}

    def param_groups(self):
        return [{"params": self.conv.parameters(), "optimizer": "sgd", "lr": 0.1, "momentum": 0.0}]


def _run(tmp_path, method, batch_size, accumulate, steps=1):
    seed_everything(0)
    data = build_dataset("synthetic", tmp_path / "data", "train", SegTransform(16), preset="smoke")
    settings = TrainSettings(steps=steps, batch_size=batch_size, linear_lr=1e-3, cluster_lr=1e-3, seed=0,
                             accumulate=accumulate)
    result = train(method, Probes(4, 6), data, settings, torch.device("cpu"))
    return result, method.conv.weight.detach().clone()


def test_accumulation_equals_one_large_batch(tmp_path):
    _, large = _run(tmp_path, LinearMethod(), batch_size=4, accumulate=1)
    method = LinearMethod()
    result, accumulated = _run(tmp_path, method, batch_size=2, accumulate=2)
    assert method.batches == [2, 2]  # two micro-batches of batch_size, one optimizer step
    assert torch.allclose(large, accumulated, atol=1e-6)
    assert "loss" in result.last_losses


def test_schedule_hook_scales_the_method_lr(tmp_path):
    _, start = _run(tmp_path, LinearMethod(lambda step, total: 1.0), batch_size=4, accumulate=1, steps=0)
    _, full = _run(tmp_path, LinearMethod(lambda step, total: 1.0), batch_size=4, accumulate=1)
    seen = []
    _, half = _run(tmp_path, LinearMethod(lambda step, total: seen.append((step, total)) or 0.5), 4, 1)
    assert seen == [(0, 1)]
    assert torch.allclose(half - start, 0.5 * (full - start), atol=1e-7)  # SGD: the update scales with lr
