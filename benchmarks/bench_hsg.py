"""One HSG training step (both views, k-means segments, transformers, all losses): time and memory.

Paper-like size: COCO stage 2 is 6 images per GPU at 448 px, output stride 16, 2048-wide head.
On CPU the default is 2 images at 224 px (set USS_BENCH_BATCH / USS_BENCH_RES to change).
Memory: the CUDA allocator's peak, or on CPU the process's peak RSS (model included).

Run: pytest benchmarks/bench_hsg.py --benchmark-enable -s
"""

from __future__ import annotations

import os

import torch
from step_runner import measure, one_step_runner

CUDA = torch.cuda.is_available()
BATCH = int(os.environ.get("USS_BENCH_BATCH", 6 if CUDA else 2))
RES = int(os.environ.get("USS_BENCH_RES", 448 if CUDA else 224))
# the card's paper values (its `dataset: synthetic` config entry shrinks them for the CPU benchmark)
PAPER = {"hparams.output_stride": 16, "hparams.head_hidden": 2048, "hparams.kmeans_grid": [4, 4],
         "hparams.kmeans_iterations": 15, "hparams.eval_bn": "running",
         "hparams.optimizer": {"lr": 8e-3, "momentum": 0.9, "weight_decay": 1e-4, "transformer_lr_mult": 10}}
ROUNDS = int(os.environ.get("USS_BENCH_STEPS", 5 if CUDA else 2))


def test_hsg_train_step(benchmark):
    device = torch.device("cuda" if CUDA else "cpu")
    step, _ = one_step_runner("hsg", "fcn-resnet50", BATCH, RES, PAPER, device)
    per_step, peak = benchmark.pedantic(lambda: measure(step, device, ROUNDS), rounds=1, iterations=1)
    benchmark.extra_info.update(s_per_step=per_step, peak_gib=peak, batch=BATCH, res=RES)
    name = torch.cuda.get_device_name(0) if CUDA else "cpu"
    print(f"\nhsg fcn-resnet50 OS16, batch {BATCH} (x2 views) @ {RES}px on {name}: "
          f"{per_step * 1000:.0f} ms/step, peak {peak:.2f} GiB")
