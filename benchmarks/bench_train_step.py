"""One full training step of each method at its paper batch size (time and peak memory).

Builds each method exactly as a run would (card + published config), with a random-init backbone
and synthetic 224 px images, and times the shared training loop (method loss, backward, optimiser,
probes). Needs CUDA for paper sizes; on CPU it runs at batch 2 to stay usable.

Run: pytest benchmarks/bench_train_step.py --benchmark-enable -s
"""

from __future__ import annotations

import os
import time

import pytest
import torch

from uss_bench.config import resolve
from uss_bench.data.build import build_dataset
from uss_bench.data.transforms import SegTransform
from uss_bench.eval.probes import Probes
from uss_bench.pipeline import RunEnv, build_method, default_backbone
from uss_bench.registry import METHODS
from uss_bench.spec import RunSpec
from uss_bench.train import TrainSettings, train

CUDA = torch.cuda.is_available()
BATCH = int(os.environ.get("USS_BENCH_BATCH", 64 if CUDA else 2))
RES = int(os.environ.get("USS_BENCH_RES", 224 if CUDA else 112))
STEPS = int(os.environ.get("USS_BENCH_STEPS", 10 if CUDA else 2))
WORKERS = int(os.environ.get("USS_BENCH_WORKERS", 8 if CUDA else 0))
DATA = os.environ.get("USS_BENCH_DATA", "/tmp/uss-bench-bench-data")


def _backbones(method: str) -> list[str]:
    wanted = os.environ.get("USS_BENCH_BACKBONES")
    if wanted:
        supported = METHODS.get(method).supported_backbones
        return [b for b in wanted.split(",") if b in supported]
    return [default_backbone(method)]


CASES = [(m, b) for m in METHODS.names() for b in _backbones(m)]


@pytest.mark.parametrize(("method_name", "backbone"), CASES)
def test_train_step(benchmark, method_name, backbone):
    device = torch.device("cuda" if CUDA else "cpu")
    spec = RunSpec(method_name, "synthetic", backbone, random_init=True,
                   overrides={"train.batch_size": BATCH, "train.train_res": RES})
    config = resolve(spec)
    env = RunEnv(data_root=DATA, device=str(device))
    train_set = build_dataset("synthetic", DATA, "train", SegTransform(RES), "default")
    method = build_method(config, env, train_set.n_classes, len(train_set) // BATCH).to(device)
    probes = Probes(method.embed_dim, train_set.n_classes)

    def settings(steps: int) -> TrainSettings:
        return TrainSettings(steps=steps, batch_size=BATCH, linear_lr=1e-3, cluster_lr=1e-3,
                             amp=bool(config.train["amp"]), clip_grad_norm=config.train["clip_grad_norm"],
                             num_workers=WORKERS)

    train(method, probes, train_set, settings(2), device)  # warm-up (cuDNN autotune, allocator)
    if CUDA:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()

    def timed() -> float:
        start = time.perf_counter()
        train(method, probes, train_set, settings(STEPS), device)
        if CUDA:
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / STEPS

    per_step = benchmark.pedantic(timed, rounds=1, iterations=1)
    peak = torch.cuda.max_memory_allocated() / 2**30 if CUDA else float("nan")
    benchmark.extra_info.update(s_per_step=per_step, peak_gib=peak, batch=BATCH, res=RES)
    name = torch.cuda.get_device_name(0) if CUDA else "cpu"
    print(f"\n{method_name:6s} {backbone:13s} batch {BATCH} @ {RES}px on {name}: "
          f"{per_step * 1000:.0f} ms/step (incl. data loading), peak {peak:.2f} GiB, amp={config.train['amp']}")
