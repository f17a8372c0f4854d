"""Extra clusters: STEGO's metric drops their pixels before matching (issue 11 §5), worked by hand."""

from __future__ import annotations

import pytest
import torch

from uss_bench.eval.engine import evaluate
from uss_bench.eval.matching import hungarian
from uss_bench.eval.metrics import prepare_cluster_confusion, segmentation_metrics
from uss_bench.eval.probes import Probes
from uss_bench.methods.base import MethodAdapter, MethodContext
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


class _Columns(MethodAdapter):
    """Embeds each pixel as a one-hot of its column's cluster (columns 0,1 -> 0, 2 -> 1, 3 -> 2)."""

    name = "columns"

    def __init__(self):
        super().__init__(None, 2, {}, MethodContext("t", "none", 2, 1, 1, 1, 4))

    @property
    def embed_dim(self):
        return 3

    def embed(self, images):
        code = torch.zeros(images.shape[0], 3, *images.shape[-2:])
        for col, cluster in enumerate([0, 0, 1, 2]):
            code[:, cluster, :, col] = 1.0
        return code


def _evaluate(protocol_name):
    label = torch.tensor([[0, 0, 1, -1], [0, 0, 1, 1]])  # column 3 (cluster 2) holds one valid pixel of b
    data = [{"image": torch.zeros(3, 2, 4, dtype=torch.uint8), "label": label, "id": "0", "index": 0}]
    probes = Probes(3, 2, extra_clusters=1)
    with torch.no_grad():
        probes.cluster.centroids.copy_(torch.eye(3))
    protocol = PROTOCOLS.get(protocol_name).with_overrides(crf=False, flip_tta=False, extra_clusters=1)
    return evaluate(_Columns(), probes, data, protocol, ["a", "b"], torch.device("cpu"), batch_size=1)


def test_engine_applies_the_protocol_rule():
    uss = _evaluate("uss")["cluster"]
    assert uss["assignment"] == [0, 1, -1] and uss["n_pixels"] == 7
    assert uss["acc"] == pytest.approx(100 * 6 / 7)
    stego = _evaluate("stego")["cluster"]  # the pixel predicted as cluster 2 is dropped before matching
    assert stego["n_pixels"] == 6
    assert stego["acc"] == pytest.approx(100.0)
    assert stego["iou"] == pytest.approx({"a": 100.0, "b": 100.0})
