"""PiCIE's per-epoch k-means passes: a new seeded order every epoch (the official code calls
``reshuffle()`` at each epoch start), the same order for every pass within one epoch."""

import torch
from torch import nn

from uss_bench.data.build import build_dataset
from uss_bench.data.transforms import SegTransform
from uss_bench.eval.probes import Probes
from uss_bench.methods.base import MethodAdapter, MethodContext
from uss_bench.registry import BACKBONES
from uss_bench.train import TrainSettings, seed_everything, train


class PassRecorder(MethodAdapter):
    """Records the dataset indices each per-epoch pass visits, twice per epoch (k-means, then labels)."""

    name = "pass-recorder"

    def __init__(self, backbone, n_classes, hparams, context):
        super().__init__(backbone, n_classes, hparams, context)
        self.head = nn.Conv2d(backbone.dim, 4, 1)
        self.passes: dict[int, list[list[int]]] = {}

    @property
    def embed_dim(self):
        return 4

    def embed(self, images):
        return self.head(self.backbone(images).patch)

    def on_epoch_start(self, epoch, loader_factory):
        self.passes[epoch] = [[i for b in loader_factory() for i in b["index"].tolist()] for _ in range(2)]

    def training_step(self, batch, step):
        code = self.embed(batch["image"])
        return {"loss": code.pow(2).mean(), "code": code}

    def param_groups(self):
        return [{"params": self.head.parameters(), "optimizer": "adam", "lr": 1e-3}]


def _run(tmp_path, seed):
    seed_everything(seed)
    data = build_dataset("synthetic", tmp_path / "data", "train", SegTransform(16), preset="smoke")
    ctx = MethodContext("synthetic", "vit-s16", 6, 16, 8, 16, 16)
    method = PassRecorder(BACKBONES.get("vit-s16").build(random_init=True), 6, {}, ctx)
    settings = TrainSettings(steps=12, batch_size=16, linear_lr=5e-3, cluster_lr=5e-3, checkpoint_every=100, seed=seed)
    train(method, Probes(4, 6), data, settings, torch.device("cpu"))
    return method.passes, len(data)


def test_each_epoch_reshuffles_and_same_seed_repeats(tmp_path):
    passes, n = _run(tmp_path, seed=3)
    assert sorted(passes) == [0, 1, 2]  # 64 images / 16 = 4 steps per epoch, 12 steps
    for first, second in passes.values():
        assert sorted(first) == list(range(n))  # a full pass, every image once
        assert first == second  # k-means and label passes of one epoch share the order
    assert passes[0][0] != passes[1][0] != passes[2][0] != passes[0][0]
    assert passes[0][0] != list(range(n))  # not the fixed dataset order of the old loader
    again, _ = _run(tmp_path, seed=3)
    assert again == passes
    other, _ = _run(tmp_path, seed=4)
    assert other[0][0] != passes[0][0]
