"""Extra clusters: STEGO's metric drops their pixels before matching (issue 11 §5), worked by hand."""

from __future__ import annotations

import pytest

from uss_bench.eval.matching import hungarian
from uss_bench.eval.metrics import prepare_cluster_confusion, segmentation_metrics
from uss_bench.registry import PROTOCOLS

# rows = clusters 0, 1 and the extra cluster 2; columns = classes 0, 1
CONF = [[3, 2],
        [0, 4],
        [6, 0]]


def test_error_rule_matches_all_clusters_and_counts_unmatched_pixels_as_errors():
    conf = prepare_cluster_confusion(CONF, "error")
    assignment = hungarian(conf)
    assert assignment.tolist() == [-1, 1, 0]  # 6 + 4 = 10 beats 3 + 4 = 7: the extra cluster takes class 0
    m = segmentation_metrics(conf, assignment)
    assert m.acc == pytest.approx(100 * 10 / 15)  # cluster 0's 5 pixels stay, as errors
    # class 0: tp 6, predicted 6, true 9 -> 6/9; class 1: tp 4, predicted 4, true 6 -> 4/6
    assert m.iou.tolist() == pytest.approx([6 / 9, 4 / 6])


def test_official_rule_drops_extra_cluster_pixels_before_matching():
    # UnsupervisedMetrics.update keeps only 0 <= pred < n_classes: cluster 2's row never exists
    conf = prepare_cluster_confusion(CONF, "drop_before_matching")
    assert conf.tolist() == [[3, 2], [0, 4], [0, 0]]
    assignment = hungarian(conf)
    assert assignment.tolist() == [0, 1, -1]
    m = segmentation_metrics(conf, assignment)
    assert m.acc == pytest.approx(100 * 7 / 9)
    # class 0: tp 3, predicted 5, true 3 -> 3/5; class 1: tp 4, predicted 4, true 6 -> 4/6
    assert m.iou.tolist() == pytest.approx([3 / 5, 4 / 6])
    # the README's old wording ("drops pixels of unmatched clusters") would have given a third number:
    # matching on everything, then dropping cluster 0's 5 pixels -> 10 / 10
    assert m.acc != pytest.approx(100.0)


def test_no_extra_clusters_no_difference():
    conf = [[5, 1], [2, 7]]
    a = prepare_cluster_confusion(conf, "error")
    b = prepare_cluster_confusion(conf, "drop_before_matching")
    assert a.tolist() == b.tolist() == conf


def test_protocols_name_the_rule():
    assert PROTOCOLS.get("uss").extra_cluster_pixels == "error"
    for name in ("stego", "hp", "ppap"):
        assert PROTOCOLS.get(name).extra_cluster_pixels == "drop_before_matching"
    with pytest.raises(ValueError, match="extra_cluster_pixels"):
        PROTOCOLS.get("uss").with_overrides(extra_cluster_pixels="drop")
    with pytest.raises(ValueError, match="unknown extra_cluster_pixels"):
        prepare_cluster_confusion(CONF, "drop")
