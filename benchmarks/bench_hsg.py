"""One HSG training step (both views, k-means segments, transformers, all losses): time and memory.

Paper-like size: COCO stage 2 is 6 images per GPU at 448 px, output stride 16, 2048-wide head.
On CPU the default is 2 images at 224 px (set USS_BENCH_BATCH / USS_BENCH_RES to change).
Memory: the CUDA allocator's peak, or on CPU the process's peak RSS (model included).

Run: pytest benchmarks/bench_hsg.py --benchmark-enable -s
"""

from __future__ import annotations

import os
import resource
import time
from typing import Any

import torch

from uss_bench.config import resolve
from uss_bench.eval.probes import Probes
from uss_bench.launch.runner import RunEnv, build_method
from uss_bench.spec import RunSpec
from uss_bench.train import TrainSettings, build_optimizers

CUDA = torch.cuda.is_available()
BATCH = int(os.environ.get("USS_BENCH_BATCH", 6 if CUDA else 2))
RES = int(os.environ.get("USS_BENCH_RES", 448 if CUDA else 224))
# the card's paper values (the "default" preset shrinks them for the synthetic benchmark)
PAPER = {"hparams.output_stride": 16, "hparams.head_hidden": 2048, "hparams.kmeans_grid": [4, 4],
         "hparams.kmeans_iterations": 15, "hparams.eval_bn": "running",
         "hparams.optimizer": {"lr": 8e-3, "momentum": 0.9, "weight_decay": 1e-4, "transformer_lr_mult": 10}}
ROUNDS = int(os.environ.get("USS_BENCH_STEPS", 5 if CUDA else 2))


def one_step_runner(method: str, backbone: str, batch: int, res: int, overrides: dict[str, Any],
                    device: torch.device):
    """Build the method as a run would (card + preset + overrides) and return step() and its state."""
    spec = RunSpec(method, "synthetic", backbone, random_init=True,
                   overrides={"train.batch_size": batch, "train.train_res": res, **overrides})
    config = resolve(spec)
    model = build_method(config, RunEnv(device=str(device)), 6, 10).to(device)
    probes = Probes(model.embed_dim, 6).to(device)
    optimizers = build_optimizers(model, probes, TrainSettings(1, batch, 1e-3, 1e-3))
    images = torch.rand(batch, 3, res, res, device=device)
    data = {"image": images, "id": [f"bench{i}" for i in range(batch)], "index": torch.arange(batch)}

    def step() -> None:
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        out = model.training_step(data, 0)
        out["loss"].backward()
        for name, opt in optimizers.items():
            if not name.endswith("_probe"):
                opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step, config


def measure(step, device: torch.device, rounds: int) -> tuple[float, float]:
    """(seconds per step, peak memory GiB): CUDA allocator peak on GPU; on CPU the process's peak
    resident set size (tracemalloc cannot see torch's CPU allocator), which includes the model."""
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(rounds):
        step()
    per_step = (time.perf_counter() - start) / rounds
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return per_step, peak


def test_hsg_train_step(benchmark):
    device = torch.device("cuda" if CUDA else "cpu")
    step, _ = one_step_runner("hsg", "fcn-resnet50", BATCH, RES, PAPER, device)
    per_step, peak = benchmark.pedantic(lambda: measure(step, device, ROUNDS), rounds=1, iterations=1)
    benchmark.extra_info.update(s_per_step=per_step, peak_gib=peak, batch=BATCH, res=RES)
    name = torch.cuda.get_device_name(0) if CUDA else "cpu"
    print(f"\nhsg fcn-resnet50 OS16, batch {BATCH} (x2 views) @ {RES}px on {name}: "
          f"{per_step * 1000:.0f} ms/step, peak {peak:.2f} GiB")
