"""The CRF is handed exactly the image the official dense_crf builds (issue 11 §2b).

The reference is the official chain itself, run with the libraries the official repos use: the
loader's ``ToTensor`` + ``Normalize`` on a PIL image, then ``dense_crf``'s ``UnNormalize`` (per
channel ``mul_(std).add_(mean)``), ``to_pil_image`` and ``[:, :, ::-1]``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as VF

from uss_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from uss_bench.eval.crf_inputs import crf_batch
from uss_bench.eval.crf_kernel import CRFParams, crf_image, dense_crf

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def official_crf_image(rgb: np.ndarray) -> np.ndarray:
    img = T.Normalize(MEAN, STD)(T.ToTensor()(Image.fromarray(rgb)))  # the loader's network input
    unnorm = torch.clone(img)
    for t, m, s in zip(unnorm, MEAN, STD):
        t.mul_(s).add_(m)
    return np.ascontiguousarray(np.array(VF.to_pil_image(unnorm))[:, :, ::-1])


def official_dense_crf(rgb: np.ndarray, log_probs: torch.Tensor) -> np.ndarray:
    """The official dense_crf on one image, CRF constants of src/crf.py, argmax of Q."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    image = official_crf_image(rgb)
    probs = torch.softmax(log_probs, dim=0).numpy()
    c, h, w = probs.shape
    d = dcrf.DenseCRF2D(w, h, c)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=1, compat=3)
    d.addPairwiseBilateral(sxy=67, srgb=3, rgbim=image, compat=4)
    return np.array(d.inference(10)).reshape(c, h, w).argmax(0)


def test_constants_are_the_loaders():
    assert tuple(MEAN) == IMAGENET_MEAN and tuple(STD) == IMAGENET_STD


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
