"""One SAN training step at the paper's size (1024-d embeddings, 6-block ViT, patch 8, 128 px crops).

The batch size is not in the paper: 32 on CUDA (ours, the card's), 4 on CPU. Memory: the CUDA
allocator's peak, or on CPU the process's peak RSS (model included).

Run: pytest benchmarks/bench_san.py --benchmark-enable -s
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
BATCH = int(os.environ.get("USS_BENCH_BATCH", 32 if CUDA else 4))
RES = int(os.environ.get("USS_BENCH_RES", 128))
# the card's paper values (the "default" preset shrinks them for the synthetic benchmark)
PAPER = {"hparams.embedding_dim": 1024, "hparams.generator_hidden": 1024,
         "hparams.vit": {"dim": 1024, "depth": 6, "heads": 16, "patch_size": 8, "img_size": 128},
         "hparams.optimizer": {"lr": 1e-4, "weight_decay": 0.0}}
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


def test_san_train_step(benchmark):
    device = torch.device("cuda" if CUDA else "cpu")
    step, config = one_step_runner("san", "san-vit", BATCH, RES, PAPER, device)
    per_step, peak = benchmark.pedantic(lambda: measure(step, device, ROUNDS), rounds=1, iterations=1)
    benchmark.extra_info.update(s_per_step=per_step, peak_gib=peak, batch=BATCH, res=RES)
    name = torch.cuda.get_device_name(0) if CUDA else "cpu"
    dim = config.hparams["embedding_dim"]
    print(f"\nsan P={dim}, ViT-6 patch 8, batch {BATCH} @ {RES}px on {name}: "
          f"{per_step * 1000:.0f} ms/step, peak {peak:.2f} GiB")
