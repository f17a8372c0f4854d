"""HSG's losses on tiny hand-worked inputs."""

import math

import pytest
import torch

from uss_bench.methods.hsg.loss import centroid_contrast, dmon_losses, knn_adjacency, segsort_contrastive


def test_segsort_contrastive_hand_computed():
    r = 1 / math.sqrt(2)
    pixels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [r, r]])
    keys = torch.tensor([0, 1, 0])
    # pixel 0 (segment 0, key 0): positive {2}, negative {1} -> log(1 + e^{-1/sqrt2})
    # pixel 1 (segment 1, key 1): no other key-1 segment -> own segment is the positive;
    #   negatives {0, 2} -> log((e + 1 + e^{1/sqrt2}) / e)
    expected = 0.5 * (math.log(1 + math.exp(-r)) + math.log((math.e + 1 + math.exp(r)) / math.e))
    loss = segsort_contrastive(pixels, torch.tensor([0, 1]), prototypes, keys, concentration=1.0)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.57470, abs=1e-4)


def test_segsort_contrastive_ignores_pixels_and_scales_with_kappa():
    pixels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    prototypes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    keys = torch.tensor([0, 1])
    # only pixel 0 counts; own segment positive (logit k), other segment negative (logit 0)
    loss = segsort_contrastive(pixels, torch.tensor([0, -1]), prototypes, keys, concentration=2.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2.0)), rel=1e-5)


def _two_node_graph():
    return torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])


def test_dmon_official_and_standard_normalisers():
    adjacency = _two_node_graph()  # d = [1, 1], sum d = 2
    split = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    # Tr(C^T A C) = 0, Tr(C^T d d^T C) = 2
    mod, col = dmon_losses(adjacency, split, normalizer="official")  # Z = 4: 1 - (0 - 2/4)/4
    assert mod.item() == pytest.approx(1.125)
    assert col.item() == pytest.approx(math.sqrt(2) * math.sqrt(2) / 2)  # ||[1,1]|| sqrt(k) / n = 1
    mod, _ = dmon_losses(adjacency, split, normalizer="standard")  # Z = 2: 1 - (0 - 2/2)/2
    assert mod.item() == pytest.approx(1.5)
    merged = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    # Tr(C^T A C) = 2, Tr(C^T d d^T C) = 4
    mod, col = dmon_losses(adjacency, merged, normalizer="official")
    assert mod.item() == pytest.approx(1 - (2 - 4 / 4) / 4)
    assert col.item() == pytest.approx(2 * math.sqrt(2) / 2)
    mod, _ = dmon_losses(adjacency, merged, normalizer="standard")
    assert mod.item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="normalizer"):
        dmon_losses(adjacency, merged, normalizer="twice")


def test_dmon_padding_masks_assignments_but_counts_slots():
    adjacency = torch.zeros(1, 3, 3)
    adjacency[0, 0, 1] = adjacency[0, 1, 0] = 1.0
    assign = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])
    mod, col = dmon_losses(adjacency, assign, valid=torch.tensor([[True, True, False]]))
    assert mod.item() == pytest.approx(1.125)
    assert col.item() == pytest.approx(math.sqrt(2) * math.sqrt(2) / 3)  # n = 3 slots incl. padding


def test_knn_adjacency_excludes_self_and_padding_and_keeps_top_k_per_view():
    nodes = torch.tensor([[[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [1.0, 0.0]]])
    pad = torch.tensor([[False, False, False, True]])
    adjacency = knn_adjacency(nodes, pad, k=1)
    assert adjacency[0].tolist() == [[0, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    views = torch.tensor([[0, 1, 1, 0]])
    adjacency = knn_adjacency(nodes, pad, k=1, group=views)
    # official COCO rule: the top-1 in *each* view (node 0's own view holds only itself: no edge there)
    assert adjacency[0].tolist() == [[0, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]]


def test_centroid_contrast_hand_computed():
    centroids = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # normalised -> orthogonal unit vectors
    assert centroid_contrast(centroids, concentration=1.0).item() == pytest.approx(math.log(1 + math.exp(-1)))
