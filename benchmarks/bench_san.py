"""One SAN training step at the paper's size (1024-d embeddings, 6-block ViT, patch 8, 128 px crops).

The batch size is not in the paper: 32 on CUDA (ours, the card's), 4 on CPU. Memory: the CUDA
allocator's peak, or on CPU the process's peak RSS (model included).

Run: pytest benchmarks/bench_san.py --benchmark-enable -s
"""

from __future__ import annotations

import os

import torch
from step_runner import measure, one_step_runner

CUDA = torch.cuda.is_available()
BATCH = int(os.environ.get("USS_BENCH_BATCH", 32 if CUDA else 4))
RES = int(os.environ.get("USS_BENCH_RES", 128))
# the card's paper values (its `dataset: synthetic` config entry shrinks them for the CPU benchmark)
PAPER = {"hparams.embedding_dim": 1024, "hparams.generator_hidden": 1024,
         "hparams.vit": {"dim": 1024, "depth": 6, "heads": 16, "patch_size": 8, "img_size": 128},
         "hparams.optimizer": {"lr": 1e-4, "weight_decay": 0.0}}
ROUNDS = int(os.environ.get("USS_BENCH_STEPS", 5 if CUDA else 2))


def test_san_train_step(benchmark):
    device = torch.device("cuda" if CUDA else "cpu")
    step, config = one_step_runner("san", "san-vit", BATCH, RES, PAPER, device)
    per_step, peak = benchmark.pedantic(lambda: measure(step, device, ROUNDS), rounds=1, iterations=1)
    benchmark.extra_info.update(s_per_step=per_step, peak_gib=peak, batch=BATCH, res=RES)
    name = torch.cuda.get_device_name(0) if CUDA else "cpu"
    dim = config.hparams["embedding_dim"]
    print(f"\nsan P={dim}, ViT-6 patch 8, batch {BATCH} @ {RES}px on {name}: "
          f"{per_step * 1000:.0f} ms/step, peak {peak:.2f} GiB")
