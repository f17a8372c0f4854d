import math

import numpy as np
import pytest

from uss_bench.eval.matching import hungarian, identity
from uss_bench.eval.metrics import segmentation_metrics


def test_hand_computed_two_classes():
    # rows = predicted, cols = true
    conf = np.array([[3, 1], [2, 4]])
    m = segmentation_metrics(conf, identity(conf))
    assert m.acc == pytest.approx(100 * 7 / 10)
    # IoU0 = 3 / (3 + 1 + 2) ; IoU1 = 4 / (4 + 2 + 1)
    assert m.iou.tolist() == pytest.approx([3 / 6, 4 / 7])
    assert m.miou == pytest.approx(100 * (3 / 6 + 4 / 7) / 2)


def test_hungarian_permutes_clusters():
    conf = np.array([[0, 5], [6, 1]])  # cluster 0 is class 1, cluster 1 is class 0
    m = segmentation_metrics(conf, hungarian(conf))
    assert m.acc == pytest.approx(100 * 11 / 12)
    assert m.iou.tolist() == pytest.approx([6 / 7, 5 / 6])


def test_extra_cluster_pixels_count_as_errors():
    # 3 clusters, 2 classes: cluster 2 is unmatched; its 4 pixels of class 0 are errors
    conf = np.array([[5, 0], [0, 5], [4, 0]])
    assignment = hungarian(conf)
    assert assignment.tolist() == [0, 1, -1]
    m = segmentation_metrics(conf, assignment)
    assert m.acc == pytest.approx(100 * 10 / 14)  # STEGO's mask would drop them and report 100
    assert m.iou.tolist() == pytest.approx([5 / 9, 1.0])


def test_absent_class_skip_vs_zero():
    # class 2 absent from ground truth and never predicted -> 0/0
    conf = np.array([[4, 0, 0], [0, 2, 0], [0, 0, 0]])
    skip = segmentation_metrics(conf, identity(conf), "skip_absent")
    zero = segmentation_metrics(conf, identity(conf), "absent_as_zero")
    assert math.isnan(skip.iou[2])
    assert skip.miou == pytest.approx(100.0)
    assert zero.miou == pytest.approx(100 * 2 / 3)


def test_class_absent_from_gt_but_predicted_scores_zero():
    conf = np.array([[4, 0], [1, 0]])  # class 1 never true, predicted once
    m = segmentation_metrics(conf, identity(conf))
    assert m.iou.tolist() == pytest.approx([4 / 5, 0.0])
    assert m.miou == pytest.approx(100 * 0.4)


def test_as_dict_names_classes_in_percent():
    conf = np.array([[1, 0], [0, 0]])
    d = segmentation_metrics(conf, identity(conf)).as_dict(["a", "b"])
    assert d["iou"] == {"a": 100.0, "b": None}


def test_unknown_averaging():
    with pytest.raises(ValueError, match="averaging"):
        segmentation_metrics(np.eye(2), identity(np.eye(2)), "mean")
