"""Confusion accumulation + matching over 50 M pixels, 27 classes, on one CPU core.

Target: >= 200 M px/s. Run: pytest benchmarks/bench_confusion.py --benchmark-enable -s
"""

import torch

from uss_bench.eval.confusion import ConfusionAccumulator
from uss_bench.eval.matching import hungarian
from uss_bench.eval.metrics import segmentation_metrics

N_PIXELS = 50_000_000
K = 27


def _inputs():
    g = torch.Generator().manual_seed(0)
    # what the engine produces: argmax predictions (int64) and int64 labels with -1 ignore
    pred = torch.randint(0, K, (N_PIXELS // 320**2, 320, 320), generator=g)
    gt = torch.randint(-1, K, pred.shape, generator=g)
    return pred, gt


def test_confusion_and_matching_50M(benchmark):
    torch.set_num_threads(1)
    pred, gt = _inputs()

    def run():
        acc = ConfusionAccumulator(K, K)
        for p, t in zip(pred.split(16), gt.split(16)):  # 16-image eval batches
            acc.update(p, t)
        return segmentation_metrics(acc.matrix, hungarian(acc.matrix))

    metrics = benchmark.pedantic(run, rounds=3, iterations=1)
    seconds = benchmark.stats.stats.mean
    rate = pred.numel() / seconds / 1e6
    benchmark.extra_info["mpixels_per_s"] = round(rate, 1)
    print(f"\nconfusion+matching: {pred.numel() / 1e6:.1f} M px in {seconds:.3f} s = {rate:.0f} M px/s (1 thread)")
    assert 0 <= metrics.acc <= 100


def test_stego_masked_bincount_reference(benchmark):
    """For scale: STEGO's masked int64 bincount."""
    torch.set_num_threads(1)
    pred, gt = _inputs()

    def run():
        hist = torch.zeros(K * K, dtype=torch.int64)
        for p, t in zip(pred.split(16), gt.split(16)):
            keep = (t >= 0) & (t < K) & (p >= 0) & (p < K)
            hist += torch.bincount(K * p[keep] + t[keep], minlength=K * K)
        return hist

    benchmark.pedantic(run, rounds=1, iterations=1)
    rate = pred.numel() / benchmark.stats.stats.mean / 1e6
    print(f"\nSTEGO masked bincount: {rate:.0f} M px/s (1 thread)")
