"""Run the dense CRF over many images without ever hanging (reference §B).

pydensecrf holds the GIL, so only processes help. The pool uses the ``spawn`` context: workers
are fresh interpreters that import numpy and pydensecrf only, whatever torch/CUDA state the parent
has (STEGO's fork-after-CUDA pool is what hangs in STEGO #16). Workers are started and warmed up
when the runner is created, before the model runs. Every task has a timeout; on a timeout or a
dead worker the pool is torn down and the remaining images run serially in this process.

``submit`` hands a batch to the pool and returns at once (a ``CRFJob``), so the caller can embed the
next batch while the workers run the CRF; ``run`` is ``submit(...).result()``.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
from collections.abc import Sequence

import numpy as np

from uss_bench.eval.crf_kernel import CRFParams, _noop, dense_crf

log = logging.getLogger(__name__)


def _worker_init() -> None:
    # One thread per worker: N workers x M BLAS/OpenMP threads would oversubscribe the node.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"


class CRFRunner:
    """``run(images, probs)`` -> list of int16 label maps, in order; ``workers=0`` is serial."""

    def __init__(
        self, workers: int = 0, params: CRFParams = CRFParams(), timeout_s: float = 120.0, kernel=dense_crf
    ) -> None:
        self.params = params
        self.kernel = kernel  # module-level and picklable; replaceable in tests
        self.timeout_s = timeout_s
        self.requested_workers = workers
        self.fallback_reason: str | None = None
        self._pool: cf.ProcessPoolExecutor | None = None
        if workers > 0:
            self._pool = cf.ProcessPoolExecutor(
                max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_worker_init
            )
            try:  # start every worker now, before any model work in this process
                list(self._pool.map(_noop_task, range(workers), timeout=max(timeout_s, 60.0)))
            except Exception as exc:  # noqa: BLE001 - any start-up failure means serial
                self._fall_back(f"CRF pool failed to start: {exc!r}")

    @property
    def mode(self) -> str:
        return f"pool[{self.requested_workers}]" if self._pool is not None else "serial"

    def run(self, images: Sequence[np.ndarray], probs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.submit(images, probs).result()

    def submit(self, images: Sequence[np.ndarray], probs: Sequence[np.ndarray]) -> CRFJob:
        """Start the CRF of a batch; with a pool this returns before any image is done."""
        return CRFJob(self, list(images), list(probs))

    def _fall_back(self, reason: str) -> None:
        log.warning(reason)
        self.fallback_reason = reason
        self.close(kill=True)

    def close(self, kill: bool = False) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if kill:  # a hung worker never returns; terminate it instead of waiting forever
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
        pool.shutdown(wait=not kill, cancel_futures=True)

    def __enter__(self) -> CRFRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict:
        return {"params": self.params.as_dict(), "mode": self.mode, "fallback": self.fallback_reason}


class CRFJob:
    """One batch handed to a ``CRFRunner``: ``result()`` waits for its label maps, in order.

    Each image is waited for at most ``timeout_s``. A timeout or a dead worker tears the pool down
    (the runner turns serial) and this batch's remaining images, like any later batch's, run serially.
    """

    def __init__(self, runner: CRFRunner, images: list[np.ndarray], probs: list[np.ndarray]) -> None:
        self.runner, self.images, self.probs = runner, images, probs
        self.futures: list[cf.Future] | None = None
        if runner._pool is not None:
            try:
                self.futures = [runner._pool.submit(runner.kernel, i, p, runner.params) for i, p in zip(images, probs)]
            except cf.process.BrokenProcessPool as exc:  # a worker died since the last batch
                runner._fall_back(f"CRF pool broken before a batch ({exc!r}); continuing serially")
                self.futures = None

    def result(self) -> list[np.ndarray]:
        runner = self.runner
        if self.futures is None:
            return [runner.kernel(i, p, runner.params) for i, p in zip(self.images, self.probs)]
        results: list[np.ndarray] = []
        for k, future in enumerate(self.futures):
            try:
                results.append(future.result(timeout=runner.timeout_s))
            except (cf.TimeoutError, cf.process.BrokenProcessPool, cf.CancelledError) as exc:
                if runner._pool is not None:  # the first failure; later jobs find their futures cancelled
                    runner._fall_back(f"CRF worker failed on image {k} of the batch ({exc!r}); continuing serially")
                results.extend(dense_crf(i, p, runner.params) for i, p in zip(self.images[k:], self.probs[k:]))
                break
        return results


def _noop_task(_: int) -> int:
    return _noop()
