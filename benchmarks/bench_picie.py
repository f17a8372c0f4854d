"""PiCIE's k-means (uss_bench/clustering/kmeans.py): 1 M 128-d unit vectors, K = 27, 20 Lloyd rounds
(the official niter); and the streaming form (fit on N/2, then 10 update chunks of N/20).

Peak memory: torch.cuda.max_memory_allocated on CUDA; on CPU the peak-RSS growth of a forked child.

    pytest benchmarks/bench_picie.py --benchmark-enable -s
    USS_BENCH_KMEANS_N=200000 pytest ...   # fewer vectors on a slow CPU
"""

from __future__ import annotations

import os
import resource

import pytest
import torch
import torch.nn.functional as F

from uss_bench.clustering.kmeans import MiniBatchKMeans, lloyd

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
N, DIM, K, NITER = int(os.environ.get("USS_BENCH_KMEANS_N", 1_000_000)), 128, 27, 20


def _vectors() -> torch.Tensor:
    return F.normalize(torch.randn(N, DIM, generator=torch.Generator().manual_seed(0)), dim=1).to(DEVICE)


def _fit(x: torch.Tensor) -> None:
    lloyd(x, K, NITER, seed=0)
    if CUDA:
        torch.cuda.synchronize()


def _peak_bytes() -> int:
    if CUDA:
        x = _vectors()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _fit(x)
        return torch.cuda.max_memory_allocated() - base
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        x = _vectors()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        _fit(x)
        os.write(write, str((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    return int(os.read(read, 64))


@pytest.mark.benchmark(group="picie")
def test_kmeans_fit_1m_vectors(benchmark):
    x = _vectors()
    benchmark.pedantic(_fit, args=(x,), rounds=int(os.environ.get("USS_BENCH_ROUNDS", 3)), warmup_rounds=1)
    peak = _peak_bytes()
    benchmark.extra_info.update(device=str(DEVICE), n=N, dim=DIM, k=K, niter=NITER, peak_mib=peak / 2**20)
    print(f"\nk-means N={N} D={DIM} K={K} niter={NITER} on {DEVICE}: mean {benchmark.stats.stats.mean:.3f} s, "
          f"peak {peak / 2**20:.1f} MiB above the input")


@pytest.mark.benchmark(group="picie")
def test_minibatch_kmeans_init_and_updates(benchmark):
    x = _vectors()

    def run() -> None:
        km = MiniBatchKMeans(K, init_points=N // 2, update_points=N // 20, niter=NITER, seed=0)
        for chunk in x.split(N // 20):
            km.add(chunk)
        km.finish()
        if CUDA:
            torch.cuda.synchronize()

    benchmark.pedantic(run, rounds=int(os.environ.get("USS_BENCH_ROUNDS", 3)), warmup_rounds=1)
    print(f"\nmini-batch k-means N={N} (init on N/2, 10 updates of N/20) on {DEVICE}: "
          f"mean {benchmark.stats.stats.mean:.3f} s")
