"""Normalized Foreground Covering (HSG Eq. 10) on hand-drawn masks."""

import math

import numpy as np
import pytest

from uss_bench.eval.nfcovering import HierarchyCovering, ground_truth_regions, nf_covering

# 4 x 4 ground truth: background 0, a 2x2 "cat" (1) top-left, a 1x4 "dog" (2) bottom row
GT = np.array([[1, 1, 0, 0],
               [1, 1, 0, 0],
               [0, 0, 0, 0],
               [2, 2, 2, 2]])


def test_perfect_prediction_scores_one_whatever_the_ids():
    pred = np.where(GT == 1, 7, np.where(GT == 2, 3, 5))
    assert nf_covering(pred, GT) == pytest.approx(1.0)


def test_hand_computed_partial_overlaps():
    # left half one region, right half another: cat is inside the left half (4 px of 8);
    # dog overlaps the left half by 2 (union 8 + 4 - 2 = 10) and the right half by 2 -> 0.2
    pred = np.array([[0, 0, 1, 1]] * 4)
    assert nf_covering(pred, GT) == pytest.approx((4 / 8 + 2 / 10) / 2)


def test_large_and_small_regions_weigh_the_same():
    # one region everywhere: cat IoU 4/16, dog 4/16; the classic Covering would weigh by size
    assert nf_covering(np.zeros((4, 4), int), GT) == pytest.approx(0.25)


def test_ignore_pixels_are_removed_and_background_excluded():
    gt = GT.copy()
    gt[2] = -1  # ignore the third row
    pred = np.array([[0, 0, 1, 1]] * 4)
    # over the 12 valid pixels the left half has 6: cat 4/6, dog 2/(6 + 4 - 2)
    assert nf_covering(pred, gt) == pytest.approx((4 / 6 + 2 / 8) / 2)
    assert math.isnan(nf_covering(pred, np.zeros((4, 4), int)))  # no foreground region
    assert len(ground_truth_regions(GT, background=())) == 3


def test_component_regions_split_disconnected_parts():
    gt = np.array([[1, 0, 1]])
    assert len(ground_truth_regions(gt, regions="component")) == 2
    pred = np.array([[0, 1, 1]])
    # class region {0, 2}: IoU 1/2 with {0}, 1/3 with {1, 2}
    assert nf_covering(pred, gt, regions="class") == pytest.approx(1 / 2)
    # components {0}: IoU 1 with {0}; {2}: IoU 1/2 with {1, 2}
    assert nf_covering(pred, gt, regions="component") == pytest.approx((1 / 1 + 1 / 2) / 2)


def test_hierarchy_accumulator_averages_images_per_level():
    acc = HierarchyCovering(["fine", "coarse"])
    perfect = np.where(GT == 1, 7, np.where(GT == 2, 3, 5))
    acc.update([perfect, np.zeros((4, 4), int)], GT)
    acc.update([perfect, perfect], GT)
    acc.update([perfect, perfect], np.zeros((4, 4), int))  # no foreground: does not count
    assert acc.result() == pytest.approx({"fine": 100.0, "coarse": 62.5})
    with pytest.raises(ValueError, match="expected 2 levels"):
        acc.update([perfect], GT)
