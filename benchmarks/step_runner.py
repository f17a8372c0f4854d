"""Shared by the one-step benchmarks: build a method as a run would, time steps, read peak memory."""

from __future__ import annotations

import resource
import time
from typing import Any

import torch

from uss_bench.config import resolve
from uss_bench.eval.probes import Probes
from uss_bench.pipeline import RunEnv, build_method
from uss_bench.spec import RunSpec
from uss_bench.train import TrainSettings, build_optimizers


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
