"""CRF throughput at 320x320 with 27 classes, serial vs a pool of 1 and 2 workers.

Target: 2 workers >= 1.8x one worker. Run: pytest benchmarks/bench_crf.py --benchmark-enable -s
"""

import numpy as np
import pytest

from uss_bench.eval.crf import CRFRunner

N_IMAGES = 8


def _batch():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (320, 320, 3), dtype=np.uint8) for _ in range(N_IMAGES)]
    probs = []
    for _ in range(N_IMAGES):
        p = rng.random((27, 320, 320), dtype=np.float32)
        probs.append(p / p.sum(0, keepdims=True))
    return images, probs


@pytest.mark.parametrize("workers", [1, 2])
def test_crf_images_per_second(benchmark, workers):
    images, probs = _batch()
    with CRFRunner(workers=workers) as runner:  # pool started (and warmed) outside the timing
        benchmark.pedantic(runner.run, args=(images, probs), rounds=2, iterations=1)
        assert runner.mode == f"pool[{workers}]"
    rate = N_IMAGES / benchmark.stats.stats.mean
    benchmark.extra_info["images_per_s"] = round(rate, 3)
    print(f"\nCRF 320x320x27, {workers} worker(s): {rate:.2f} images/s")
