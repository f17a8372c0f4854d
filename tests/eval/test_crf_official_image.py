"""The CRF is handed exactly the image the official dense_crf builds (issue 11 §2b).

The reference is the official chain itself, run with the libraries the official repos use: the
loader's ``ToTensor`` + ``Normalize`` on a PIL image, then ``dense_crf``'s ``UnNormalize`` (per
channel ``mul_(std).add_(mean)``), ``to_pil_image`` and ``[:, :, ::-1]``.
"""

from __future__ import annotations

import numpy as np
import official_stego_crf as official
import pytest
import torch

from uss_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from uss_bench.eval.crf_inputs import crf_batch
from uss_bench.eval.crf_kernel import CRFParams, crf_image, dense_crf


def official_crf_image(rgb: np.ndarray) -> np.ndarray:
    return official.crf_image(official.network_input(rgb))


def official_dense_crf(rgb: np.ndarray, log_probs: torch.Tensor) -> np.ndarray:
    return official.dense_crf(official.network_input(rgb), log_probs)


def test_constants_are_the_loaders():
    assert tuple(official.MEAN) == IMAGENET_MEAN and tuple(official.STD) == IMAGENET_STD


def test_every_value_of_every_channel_equals_the_official_image():
    # all 256 levels in each channel, in every combination position-wise, plus random images
    levels = np.arange(256, dtype=np.uint8)
    grid = np.stack(np.meshgrid(levels, levels[::-1], indexing="ij"), -1)
    ramp = np.concatenate([grid, grid[..., :1]], -1)  # [256,256,3]
    rng = np.random.default_rng(0)
    cases = [ramp] + [rng.integers(0, 256, (37, 53, 3), dtype=np.uint8) for _ in range(5)]
    for rgb in cases:
        ours = crf_image(rgb, "official")
        assert ours.dtype == np.uint8 and ours.flags.c_contiguous
        assert np.array_equal(ours, official_crf_image(rgb))
    # and the rule is not the identity: truncation lowers some levels, the channels are reversed
    assert (crf_image(ramp, "official")[..., ::-1] < ramp).any()
    assert np.array_equal(crf_image(ramp, "exact_rgb"), ramp)


def _scene(seed: int, size: int = 48, classes: int = 4):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 4.0, yy * 3.0, (xx + yy) * 2.0], -1) + rng.normal(0, 30, (size, size, 3))
    rgb = np.clip(base, 0, 255).astype(np.uint8)
    logits = torch.from_numpy(rng.normal(size=(1, classes, size, size)).astype(np.float32) * 2)
    return rgb, logits


def test_in_loop_inputs_and_kernel_give_the_official_crf():
    for seed in range(3):
        rgb, logits = _scene(seed)
        images, probs = crf_batch(torch.from_numpy(rgb).permute(2, 0, 1)[None], logits)
        ours = dense_crf(images[0], probs[0], CRFParams())
        official = official_dense_crf(rgb, torch.log_softmax(logits, dim=1)[0])
        assert np.array_equal(ours, official)


def test_the_image_rule_changes_the_crf_output():
    # so the equality above is not vacuous: the exact RGB image gives other labels on some pixel
    differs = 0
    for seed in range(3):
        rgb, logits = _scene(seed)
        images, probs = crf_batch(torch.from_numpy(rgb).permute(2, 0, 1)[None], logits)
        differs += int((dense_crf(images[0], probs[0], CRFParams(image="exact_rgb"))
                        != dense_crf(images[0], probs[0], CRFParams())).sum())
    assert differs > 0


def test_unknown_image_rule_is_refused():
    with pytest.raises(ValueError, match="CRF image rule"):
        CRFParams(image="bgr")
