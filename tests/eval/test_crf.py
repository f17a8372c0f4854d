import os
import time

import numpy as np
import pytest

from uss_bench.eval.crf import CRFRunner
from uss_bench.eval.crf_kernel import CRFParams, dense_crf


def _case(seed: int, size: int = 32, classes: int = 3):
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size, 3), np.uint8)
    image[:, size // 2 :] = 200  # two flat halves with an edge the bilateral term should respect
    image = np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)
    logits = rng.normal(size=(classes, size, size)).astype(np.float32)
    logits[0, :, : size // 2] += 1.0
    logits[1, :, size // 2 :] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(0, keepdims=True)
    return image, probs.astype(np.float32)


def hanging_kernel(image, probs, params):  # module-level so spawned workers can import it
    time.sleep(600)


def dying_kernel(image, probs, params):
    os._exit(3)


def test_crf_cleans_noisy_halves():
    image, probs = _case(0)
    raw = probs.argmax(0)
    refined = dense_crf(image, probs, CRFParams())
    assert refined.shape == (32, 32) and refined.dtype == np.int16
    # the edge-aware smoothing agrees with the two halves far more than the noisy argmax does
    truth = np.zeros((32, 32), int)
    truth[:, 16:] = 1
    assert (refined == truth).mean() > 0.95 > (raw == truth).mean()


def test_serial_and_pooled_are_identical():
    cases = [_case(s) for s in range(4)]
    images, probs = [c[0] for c in cases], [c[1] for c in cases]
    serial = CRFRunner(workers=0).run(images, probs)
    with CRFRunner(workers=2) as pooled:
        assert pooled.mode == "pool[2]"
        parallel = pooled.run(images, probs)
    for a, b in zip(serial, parallel, strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("kernel", [hanging_kernel, dying_kernel])
def test_hung_or_dead_worker_falls_back_to_serial(kernel):
    cases = [_case(s) for s in range(2)]
    images, probs = [c[0] for c in cases], [c[1] for c in cases]
    runner = CRFRunner(workers=1, timeout_s=3.0, kernel=kernel)
    started = time.monotonic()
    out = runner.run(images, probs)
    assert time.monotonic() - started < 60
    assert runner.mode == "serial" and "failed on image 0" in runner.fallback_reason
    expected = [dense_crf(i, p) for i, p in zip(images, probs)]
    assert all(np.array_equal(a, b) for a, b in zip(out, expected))


def test_size_mismatch_is_a_clear_error():
    image, probs = _case(0)
    with pytest.raises(ValueError, match="differ in size"):
        dense_crf(image[:10], probs)


def test_submitted_batches_run_while_the_caller_works_and_fall_back_together():
    cases = [_case(s) for s in range(4)]
    images, probs = [c[0] for c in cases], [c[1] for c in cases]
    expected = [dense_crf(i, p) for i, p in zip(images, probs)]
    with CRFRunner(workers=2) as runner:
        started = time.monotonic()
        jobs = [runner.submit(images[:2], probs[:2]), runner.submit(images[2:], probs[2:])]
        assert time.monotonic() - started < 1.0  # submitting does not wait for the CRF
        out = jobs[1].result() + jobs[0].result()  # results can be read in any order
    assert all(np.array_equal(a, b) for a, b in zip(out, expected[2:] + expected[:2]))
    # a hung worker while two batches are in flight: both batches complete serially, in order
    runner = CRFRunner(workers=1, timeout_s=3.0, kernel=hanging_kernel)
    jobs = [runner.submit(images[:2], probs[:2]), runner.submit(images[2:], probs[2:])]
    out = jobs[0].result() + jobs[1].result()
    assert runner.mode == "serial" and "failed on image 0" in runner.fallback_reason
    assert all(np.array_equal(a, b) for a, b in zip(out, expected))
