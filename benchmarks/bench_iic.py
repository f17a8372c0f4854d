"""IIC's IID segmentation loss: forward + backward at batch 60, 128x128 maps, K = 15, d = 10 (time and peak memory).

The (2d+1)^2 = 441 joints come from one conv2d ([K, B, H, W] * [K, B, H, W] -> [K, K, 21, 21]).
Peak memory: torch.cuda.max_memory_allocated on CUDA; on CPU the peak-RSS growth of a forked child
(torch's CPU allocator is invisible to tracemalloc).

    pytest benchmarks/bench_iic.py --benchmark-enable -s
"""

from __future__ import annotations

import os
import resource

import pytest
import torch

from uss_bench.methods.iic.loss import iid_segmentation_loss

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
BATCH, K, SIDE, D = 60, 15, 128, 10


def _maps() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x1 = torch.randn(BATCH, K, SIDE, SIDE, generator=g).to(DEVICE).requires_grad_(True)
    x2 = torch.randn(BATCH, K, SIDE, SIDE, generator=g).to(DEVICE).requires_grad_(True)
    return x1, x2


def _step(x1: torch.Tensor, x2: torch.Tensor) -> None:
    loss, _ = iid_segmentation_loss(torch.softmax(x1, 1), torch.softmax(x2, 1), lamb=1.0, half_window=D)
    loss.backward()
    if CUDA:
        torch.cuda.synchronize()


def _peak_bytes() -> int:
    if CUDA:
        x1, x2 = _maps()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _step(x1, x2)
        return torch.cuda.max_memory_allocated() - base
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: RSS growth of one step (inputs created first)
        x1, x2 = _maps()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        _step(x1, x2)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        os.write(write, str((after - before) * 1024).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    return int(os.read(read, 64))


@pytest.mark.benchmark(group="iic")
def test_iid_loss_forward_backward(benchmark):
    x1, x2 = _maps()
    benchmark.pedantic(_step, args=(x1, x2), rounds=int(os.environ.get("USS_BENCH_ROUNDS", 3)), warmup_rounds=1)
    peak = _peak_bytes()
    benchmark.extra_info.update(device=str(DEVICE), batch=BATCH, k=K, side=SIDE, d=D, peak_mib=peak / 2**20)
    print(f"\nIID loss fwd+bwd B={BATCH} K={K} {SIDE}^2 d={D} on {DEVICE}: "
          f"mean {benchmark.stats.stats.mean * 1e3:.1f} ms, peak {peak / 2**20:.1f} MiB")
