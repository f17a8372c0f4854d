"""A CRF kernel that logs when each call ran, for measuring how busy the CRF pool's workers are.

Module-level so the spawned workers can unpickle it; the log path comes from the environment, which
spawned workers inherit. One line per call: ``pid start end`` (time.time(), seconds).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from uss_bench.eval.crf_kernel import dense_crf

LOG_ENV = "USS_BENCH_CRF_TIMING_LOG"


def timed_dense_crf(image, probs, params):
    start = time.time()
    out = dense_crf(image, probs, params)
    with open(os.environ[LOG_ENV], "a") as log:
        log.write(f"{os.getpid()} {start:.4f} {time.time():.4f}\n")
    return out


def busy_fraction(log_path: str | Path, workers: int, start: float, end: float) -> float:
    """Mean fraction of [start, end] during which each worker was inside the CRF kernel."""
    busy = sum(float(b) - float(a) for _, a, b in (line.split() for line in Path(log_path).read_text().splitlines()))
    return busy / (workers * (end - start))
