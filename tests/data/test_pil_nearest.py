"""SegTransform picks the source pixel ``PIL.Image.NEAREST`` picks, for images and labels (issue 11 §2).

The reference is PIL itself, driven as the official loaders drive it: torchvision ``Resize(res,
NEAREST)`` then ``CenterCrop(res)`` (or ``Resize((res, res))`` without crop) on PIL images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as TF

from uss_bench.data.transforms import SegTransform, pil_nearest_indices


def _pil_axis(n_in: int, n_out: int) -> np.ndarray:
    """Which source column PIL copies into each output column: resize a row holding its own indices."""
    row = Image.fromarray(np.arange(n_in, dtype=np.int32)[None], mode="I")
    return np.asarray(row.resize((n_out, 1), Image.NEAREST))[0].astype(np.int64)


def test_axis_indices_equal_pil_for_every_size_pair_up_to_120():
    mismatched = [(i, o) for i in range(1, 121) for o in range(1, 121)
                  if not np.array_equal(pil_nearest_indices(i, o), _pil_axis(i, o))]
    assert mismatched == []


@pytest.mark.parametrize(("n_in", "n_out"), [(640, 426), (480, 320), (2048, 640), (1024, 320), (500, 333),
                                             (4000, 4096), (3, 1000), (1000, 3), (427, 320), (1280, 853)])
def test_axis_indices_equal_pil_for_dataset_sizes(n_in, n_out):
    assert np.array_equal(pil_nearest_indices(n_in, n_out), _pil_axis(n_in, n_out))


def test_exact_half_pixel_ties_differ_from_torch_nearest_exact():
    # 2048 -> 640: (i + 0.5) * 3.2 is an integer + 0.5 for some i; PIL's running sum lands below it
    ours = pil_nearest_indices(2048, 640)
    closed_form = np.floor((np.arange(640) + 0.5) * 2048 / 640).astype(np.int64)
    assert (ours != closed_form).sum() > 0
    assert np.all(ours[ours != closed_form] == closed_form[ours != closed_form] - 1)  # the lower pixel


def _official(image: np.ndarray, label: np.ndarray, res: int, crop: str) -> tuple[np.ndarray, np.ndarray]:
    size = res if crop == "center" else (res, res)
    steps = [T.Resize(size, T.InterpolationMode.NEAREST)] + ([T.CenterCrop(res)] if crop == "center" else [])
    pipeline = T.Compose(steps)
    return (np.asarray(pipeline(Image.fromarray(image))),
            np.asarray(pipeline(Image.fromarray(label.astype(np.int32), mode="I"))).astype(np.int64))


SHAPES = [(480, 640), (640, 480), (1024, 2048), (427, 640), (375, 500), (200, 200), (321, 322), (333, 501),
          (17, 1000), (1000, 17), (64, 48), (300, 320)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("res", [320, 224, 37])
@pytest.mark.parametrize("crop", ["center", "none"])
def test_images_and_labels_equal_pil_resize_and_crop(shape, res, crop):
    rng = np.random.default_rng(hash((shape, res)) % 2**32)
    h, w = shape
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = rng.integers(-1, 182, (h, w)).astype(np.int64)
    want_image, want_label = _official(image, label, res, crop)
    got_image, got_label = SegTransform(res, crop, "nearest")(torch.from_numpy(image).permute(2, 0, 1),
                                                              torch.from_numpy(label))
    assert got_image.dtype == torch.uint8 and got_label.dtype == torch.int64
    assert np.array_equal(got_image.permute(1, 2, 0).numpy(), want_image)
    assert np.array_equal(got_label.numpy(), want_label)


def test_torch_nearest_exact_would_have_differed():
    # the previous rule, to show the test above can fail: 640x480 -> 320 differs on whole columns
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    want, _ = _official(image, np.zeros((480, 640), np.int64), 320, "center")
    chw = torch.from_numpy(image).permute(2, 0, 1)
    old = TF.center_crop(TF.resize(chw, 320, interpolation=TF.InterpolationMode.NEAREST_EXACT), [320, 320])
    assert (old.permute(1, 2, 0).numpy() != want).any(-1).sum() == 320


def test_smooth_interpolation_still_resizes_images_with_torchvision():
    image = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8)
    label = torch.randint(0, 5, (48, 64))
    got_image, got_label = SegTransform(32, "center", "bilinear")(image, label)
    want = TF.center_crop(TF.resize(image, 32, interpolation=TF.InterpolationMode.BILINEAR, antialias=True), [32, 32])
    assert torch.equal(got_image, want)
    assert torch.equal(got_label, SegTransform(32)(image, label)[1])  # labels: PIL nearest in every mode
