"""HSG's clustering transformers, segments, views, over-segmentations and backbone."""

import numpy as np
import pytest
import torch
from PIL import Image

from uss_bench.backbones.fcn_resnet import FCNResNet50
from uss_bench.clustering.spherical_kmeans import grid_labels, kmeans_segments, spherical_kmeans
from uss_bench.methods.hsg.oversegment import OverSegmenter, relabel
from uss_bench.methods.hsg.segments import build_segments, per_image_nodes
from uss_bench.methods.hsg.transformer import ClusteringTransformer, masked_mean_std, propagate
from uss_bench.methods.hsg.views import ViewAugment
from uss_bench.registry import BACKBONES


def test_transformer_assignments_are_row_stochastic_and_propagate():
    torch.manual_seed(0)
    fine, coarse = ClusteringTransformer(8, d=16, heads=4, ffn=32), ClusteringTransformer(4, d=16, heads=4, ffn=32)
    nodes = torch.randn(3, 10, 16)
    pad = torch.zeros(3, 10, dtype=torch.bool)
    pad[1, 6:] = True
    out = fine(nodes, pad, torch.randn(3, 10, 16))
    assert out.centroids.shape == (3, 8, 16) and out.features.shape == (3, 8, 16) and out.logits.shape == (3, 10, 8)
    p_fine = out.transition(pad)
    assert torch.allclose(p_fine[~pad].sum(-1), torch.ones(26))
    assert torch.all(p_fine[pad] == 0)
    c = coarse(out.features).transition()
    assert c.shape == (3, 8, 4) and torch.allclose(c.sum(-1), torch.ones(3, 8))
    p_coarse = propagate(p_fine, c)  # P_2 = P_1 . C
    assert p_coarse.shape == (3, 10, 4)
    assert torch.allclose(p_coarse[~pad].sum(-1), torch.ones(26), atol=1e-6)


def test_statistical_feature_mapping_stats_mean_ignores_padding():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    stats = masked_mean_std(x, torch.tensor([[False, False, True]]))
    # mean 2; the padded slot adds (0 - 2)^2 (official): 6 over (count 2 + 1) -> std sqrt(2)
    assert stats[0].tolist() == pytest.approx([2.0, 2 ** 0.5])


def test_grid_init_and_spherical_kmeans_separate_two_directions():
    assert grid_labels(2, 4, (1, 2)).tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    feats = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]])
    labels = spherical_kmeans(feats, torch.tensor([0, 1, 0, 0]), 2, iterations=3)
    assert labels[0, 0] == labels[0, 2] and labels[0, 1] == labels[0, 3] and labels[0, 0] != labels[0, 1]
    emb = torch.zeros(1, 2, 2, 2)
    emb[0, 0, :, 0] = 1.0  # left column points one way, right column the other
    emb[0, 1, :, 1] = 1.0
    segs = kmeans_segments(emb, (1, 2), 5, with_location=False)
    assert segs[0].tolist() == [[0, 1], [0, 1]]


def test_segments_intersect_clusters_and_regions_with_multiview_keys():
    emb = torch.zeros(2, 2, 2, 2)
    emb[:, 0, :, 0] = 1.0
    emb[:, 1, :, 1] = 1.0
    regions = torch.tensor([[[0, 0], [1, 1]], [[0, 0], [-1, -1]]])  # view 1: bottom row is padding
    segs = build_segments(emb, regions, torch.tensor([0, 0]), (1, 2), 3, with_location=False)
    # view 0: 2 clusters x 2 regions = 4 segments; view 1: 2 segments in region 0
    assert segs.count == 6
    assert segs.pixel_segment.tolist()[-2:] == [-1, -1]
    assert torch.bincount(segs.region_key).tolist() == [4, 2]  # region 0 in either view, region 1
    assert torch.allclose(segs.prototypes.norm(dim=1), torch.ones(6))
    nodes, pad, slot = per_image_nodes(segs.prototypes, torch.tensor([0, 0, 0, 1, 1, 1]), 2, 2)
    assert nodes.shape == (2, 2, 2) and not pad.any()
    assert slot.tolist() == [0, 1, -1, 2, 3, -1]  # the third segment of each image overflows


def test_views_pad_regions_with_ignore():
    torch.manual_seed(0)
    aug = ViewAugment(size=16, scale=(0.5, 0.5), flip=False, jitter_p=0.0, gray_p=0.0)
    views = aug(torch.rand(2, 3, 16, 16), torch.zeros(2, 16, 16, dtype=torch.long))
    assert views.images.shape == (4, 3, 16, 16) and views.source.tolist() == [0, 0, 1, 1]
    assert (views.regions == -1).sum() == 4 * (256 - 64)  # half-size image padded back to 16 x 16


def test_oversegmenter_felzenszwalb_and_ucm(tmp_path):
    image = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    image[:, :, :, 4:] = 255
    regions = OverSegmenter({"source": "felzenszwalb", "scale": 1, "sigma": 0.0, "min_size": 1}, None, 8)(image, ["a"])
    assert regions.shape == (1, 8, 8) and set(regions.unique().tolist()) == {0, 1}
    ucm = np.zeros((16, 16), dtype=np.uint8)
    ucm[8:] = 7
    Image.fromarray(ucm).save(tmp_path / "img1.png")
    seg = OverSegmenter({"source": "ucm", "ucm_dir": str(tmp_path)}, None, 8)(image, ["img1"])
    assert seg[0, :4].eq(0).all() and seg[0, 4:].eq(1).all()  # resized 16 -> 8, relabelled 0/7 -> 0/1
    with pytest.raises(FileNotFoundError, match="missing OWT-UCM region map .*img2.png"):
        OverSegmenter({"source": "ucm", "ucm_dir": str(tmp_path)}, None, 8)(image, ["img2"])
    with pytest.raises(ValueError, match="needs oversegmentation.ucm_dir"):
        OverSegmenter({"source": "ucm"}, None, 8)
    assert relabel(np.array([5, -1, 9, 5])).tolist() == [0, -1, 1, 0]


def test_fcn_resnet_switches_output_stride_and_names_missing_weights(tmp_path):
    net = FCNResNet50(output_stride=16, test_output_stride=8)
    x = torch.rand(1, 3, 64, 64)
    assert net(x).shape == (1, 2048, 4, 4)
    net.eval()
    assert net(x).shape == (1, 2048, 8, 8)
    with pytest.raises(ValueError, match="output stride"):
        FCNResNet50(output_stride=4)
    message = BACKBONES.get("fcn-resnet50-in1k").missing_weights(tmp_path)
    assert str(tmp_path / "resnet50-0676ba61.pth") in message and "download.pytorch.org" in message
    assert BACKBONES.get("fcn-resnet50").missing_weights(None) is None
