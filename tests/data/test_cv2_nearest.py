"""OpenCV's INTER_NEAREST index rule (HSG's inference resizes labels and predictions with it)."""

import numpy as np
import pytest
import torch

from uss_bench.data.transforms import cv2_nearest_indices, cv2_nearest_resize, pil_nearest_indices


@pytest.mark.parametrize("n_in,n_out,expected", [
    # 5 -> 3: 1 / (3/5) = 5/3; floor(0, 1.67, 3.33) (PIL's half-pixel rule gives 0, 2, 4)
    (5, 3, [0, 1, 3]),
    # 3 -> 7: 1 / (7/3) = 3/7; floor(0, .43, .86, 1.29, 1.71, 2.14, 2.57)
    (3, 7, [0, 0, 0, 1, 1, 2, 2]),
    # 4 -> 2: every second pixel from the first, no offset
    (4, 2, [0, 2]),
    (6, 6, [0, 1, 2, 3, 4, 5]),
])
def test_cv2_nearest_indices_worked_by_hand(n_in, n_out, expected):
    assert cv2_nearest_indices(n_in, n_out).tolist() == expected


def test_cv2_rule_differs_from_pil_and_stays_inside():
    assert pil_nearest_indices(5, 3).tolist() == [0, 2, 4]
    for n_in in range(1, 60):
        for n_out in range(1, 60):
            idx = cv2_nearest_indices(n_in, n_out)
            assert idx.min() >= 0 and idx.max() <= n_in - 1 and np.all(np.diff(idx) >= 0)


def test_cv2_nearest_resize_gathers_rows_and_columns():
    maps = torch.arange(15).view(1, 3, 5)
    out = cv2_nearest_resize(maps, (7, 3))
    assert out.shape == (1, 7, 3)
    assert out[0, :, 0].tolist() == [0, 0, 0, 5, 5, 10, 10] and out[0, 0].tolist() == [0, 1, 3]
    assert cv2_nearest_resize(maps, (3, 5)) is maps


def test_matches_opencv_when_installed():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    for h, w, oh, ow in [(30, 40, 36, 48), (375, 500, 384, 512), (1024, 2048, 512, 1024), (37, 53, 101, 7)]:
        label = rng.integers(0, 255, (h, w), dtype=np.uint8)
        expected = cv2.resize(label, (ow, oh), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(cv2_nearest_resize(torch.from_numpy(label), (oh, ow)).numpy(), expected)
