import pytest
import torch
from torch import nn

from uss_bench.data.build import build_dataset
from uss_bench.data.transforms import SegTransform
from uss_bench.eval.probes import Probes
from uss_bench.methods.base import MethodAdapter, MethodContext
from uss_bench.registry import BACKBONES
from uss_bench.train import StepBatchSampler, TrainSettings, seed_everything, train


class Crash(RuntimeError):
    pass


class ToyMethod(MethodAdapter):
    """A trainable head with dropout: exercises optimisers, RNG state and label stripping."""

    name = "toy"
    crash_at: int | None = None
    seen_keys: set = set()

    def __init__(self, backbone, n_classes, hparams, context):
        super().__init__(backbone, n_classes, hparams, context)
        self.head = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(backbone.dim, 8, 1))

    @property
    def embed_dim(self):
        return 8

    def embed(self, images):
        return self.head(self.backbone(images).patch)

    def training_step(self, batch, step):
        ToyMethod.seen_keys |= set(batch)
        if self.crash_at is not None and step == self.crash_at:
            raise Crash(f"simulated preemption at step {step}")
        code = self.embed(batch["image"])
        # torch.rand draws from the global RNG like a real method's sampling would: resume must restore it
        return {"loss": code.pow(2).mean() + torch.rand(()) * 0, "code": code}

    def param_groups(self):
        return [{"params": self.head.parameters(), "optimizer": "adamw", "lr": 1e-2, "weight_decay": 0.1}]


def _setup(tmp_path):
    seed_everything(0)
    data = build_dataset("synthetic", tmp_path / "data", "train", SegTransform(32), preset="smoke")
    backbone = BACKBONES.get("vit-s16").build(random_init=True)
    ctx = MethodContext("synthetic", "vit-s16", 6, 4, 12, 16, 32)
    method = ToyMethod(backbone, 6, {}, ctx)
    probes = Probes(8, 6)
    settings = TrainSettings(steps=12, batch_size=4, linear_lr=5e-3, cluster_lr=5e-3, checkpoint_every=4, seed=0)
    return method, probes, data, settings


def _final_state(method, probes):
    state = {f"m.{k}": v for k, v in method.state_dict().items()}
    return state | {f"p.{k}": v for k, v in probes.state_dict().items()}


def test_resumed_run_is_identical_to_uninterrupted(tmp_path):
    method, probes, data, settings = _setup(tmp_path)
    train(method, probes, data, settings, torch.device("cpu"), checkpoint_path=tmp_path / "a" / "last.pt")
    reference = _final_state(method, probes)

    method, probes, data, settings = _setup(tmp_path)
    ckpt = tmp_path / "b" / "last.pt"
    ToyMethod.crash_at = 6
    with pytest.raises(Crash):
        train(method, probes, data, settings, torch.device("cpu"), checkpoint_path=ckpt)
    ToyMethod.crash_at = None
    assert torch.load(ckpt, weights_only=False)["step"] == 4
    # a fresh process would rebuild everything from the seed; the checkpoint restores the rest
    torch.manual_seed(123)  # disturb the global RNG: resume must not depend on it
    method, probes, data, settings = _setup(tmp_path)
    torch.manual_seed(999)
    result = train(method, probes, data, settings, torch.device("cpu"), checkpoint_path=ckpt)
    assert result.resumed_from == 4
    resumed = _final_state(method, probes)
    assert reference.keys() == resumed.keys()
    for key in reference:
        assert torch.equal(reference[key], resumed[key]), key


def test_labels_never_reach_the_method(tmp_path):
    method, probes, data, settings = _setup(tmp_path)
    settings.steps = 2
    ToyMethod.seen_keys = set()
    train(method, probes, data, settings, torch.device("cpu"))
    assert ToyMethod.seen_keys == {"image", "id", "index"}


def test_batches_are_a_function_of_seed_and_step():
    a = StepBatchSampler(10, 3, seed=0, start_step=0, total_steps=7)
    b = StepBatchSampler(10, 3, seed=0, start_step=4, total_steps=7)
    assert list(a)[4:] == list(b)
    epoch0 = [i for batch in list(a)[:3] for i in batch]
    assert len(set(epoch0)) == 9  # drop_last: 3 batches of 3 distinct images per epoch
    with pytest.raises(ValueError, match="fewer than the batch size"):
        StepBatchSampler(2, 3, 0, 0, 1)
