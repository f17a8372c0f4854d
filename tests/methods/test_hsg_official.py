"""HSG against the official rules of twke18/HSG (issue 12), each on a hand-worked case or an
independent implementation of the rule written here from its description."""

import math
import shutil
from fractions import Fraction

import pytest
import torch

from uss_bench.clustering.spherical_kmeans import grid_labels
from uss_bench.methods.base import MethodContext
from uss_bench.methods.hsg.loss import dmon_losses, knn_adjacency
from uss_bench.methods.hsg.method import HSG, SegmentPositions
from uss_bench.methods.hsg.transformer import ClusterOutput, group_means, masked_mean_std
from uss_bench.methods.hsg.views import ViewAugment


# ---- 1. k-means grid initialisation -------------------------------------------------------------
def _official_cells(size: int, cells: int) -> list[int]:
    """Cell of each index: the integer nearest to i * (cells - 1) / (size - 1), in exact arithmetic."""
    out = []
    for i in range(size):
        x = Fraction(i * (cells - 1), max(size - 1, 1))
        out.append(math.floor(x + Fraction(1, 2)))  # no exact .5 occurs in the sizes below
    return out


def test_grid_init_28px_4x4_gives_5_9_9_5_rows_column_major():
    labels = grid_labels(28, 28, (4, 4)).view(28, 28)
    rows = labels[:, 0].tolist()
    assert [rows.count(c) for c in range(4)] == [5, 9, 9, 5]  # hand-worked: i/9 rounded
    # column-major numbering: moving one cell right adds 4 (the number of row cells)
    assert labels[0, 0] == 0 and labels[5, 0] == 1 and labels[0, 5] == 4 and labels[27, 27] == 15


@pytest.mark.parametrize("h,w,grid", [(28, 28, (4, 4)), (64, 128, (12, 24)), (56, 56, (6, 6)),
                                      (14, 28, (4, 4)), (64, 64, (6, 6)), (32, 64, (6, 12)), (7, 5, (1, 1))])
def test_grid_init_matches_the_rounding_rule_for_every_size(h, w, grid):
    rows, cols = _official_cells(h, grid[0]), _official_cells(w, grid[1])
    n_rows = max(rows) + 1
    raw = [[rows[y] + n_rows * cols[x] for x in range(w)] for y in range(h)]
    ranks = {v: i for i, v in enumerate(sorted({v for line in raw for v in line}))}
    expected = torch.tensor([[ranks[v] for v in line] for line in raw])
    assert torch.equal(grid_labels(h, w, grid).view(h, w), expected)


# ---- 2. segment positions ----------------------------------------------------------------------------
def test_positions_are_col_then_row_and_uniform_init():
    torch.manual_seed(0)
    pos = SegmentPositions(d=4, size=50)
    for table in (pos.rows.weight, pos.cols.weight):
        assert table.shape == (50, 2) and table.min() >= 0 and table.max() < 1  # U[0, 1), not N(0, 1)
    with torch.no_grad():
        pos.rows.weight.copy_(torch.arange(100.0).view(50, 2))
        pos.cols.weight.copy_(-torch.arange(100.0).view(50, 2))
    table = pos.pixel_table(3, 4)
    assert table[1, 2].tolist() == [-4.0, -5.0, 2.0, 3.0]  # [col_table[x=2]; row_table[y=1]]
    # a segment's embedding is the mean over its pixels
    pixel_segment = torch.tensor([0, 0, -1, 1] + [-1] * 8)  # (0,0), (0,1) -> segment 0; (0,3) -> 1
    means = pos(pixel_segment, 2, (1, 3, 4))
    assert means[0].tolist() == [-1.0, -2.0, 0.0, 1.0] and means[1].tolist() == [-6.0, -7.0, 0.0, 1.0]


# ---- 3./4. statistical feature mapping ------------------------------------------------------------
def test_fine_std_counts_padded_slots_as_official():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])  # third slot padded (its value is ignored, taken as 0)
    stats = masked_mean_std(x, torch.tensor([[False, False, True]]))
    # mean 2; (1-2)^2 + (3-2)^2 + (0-2)^2 = 6 over (count 2 + 1) -> std sqrt(2)
    assert stats[0].tolist() == pytest.approx([2.0, math.sqrt(2.0)])


def test_coarse_std_is_torch_std_n_minus_1():
    x = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [5.0, 3.0]]])
    stats = masked_mean_std(x, None)
    # column 0: mean 3, squares 4+0+4 = 8 over n-1 = 2 -> 2; column 1: mean 1, 1+1+4 = 6 / 2 -> sqrt 3
    assert stats[0].tolist() == pytest.approx([3.0, 1.0, 2.0, math.sqrt(3.0)])


# ---- 5. coarse positional input ---------------------------------------------------------------------
def test_group_means_average_non_padded_nodes_and_zero_empty_groups():
    values = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [9.0, 9.0]]])
    labels = torch.tensor([[1, 1, 0, 2]])
    pad = torch.tensor([[False, False, False, True]])
    means = group_means(values, labels, pad, 4)
    assert means[0].tolist() == [[5.0, 4.0], [2.0, 1.0], [0.0, 0.0], [0.0, 0.0]]  # group 2 only padded


# ---- 7. kNN graph -----------------------------------------------------------------------------------
def _official_graph(nodes, pad, k, group):
    """The official rule, written per row with Python loops."""
    b, n, _ = nodes.shape
    out = torch.zeros(b, n, n)
    for i in range(b):
        valid = [j for j in range(n) if not pad[i, j]]
        aff = {(r, c): math.exp(5 * float(nodes[i, r] @ nodes[i, c])) for r in valid for c in valid}
        if len(valid) > 1:
            for r in valid:
                aff[(r, r)] = 0.0
        for r in valid:
            for g in {int(group[i, j]) for j in valid}:
                cols = [c for c in valid if int(group[i, c]) == g]
                ranked = sorted((aff[(r, c)] for c in cols), reverse=True)
                kth = ranked[min(k, len(cols)) - 1]
                for c in cols:
                    out[i, r, c] = float(aff[(r, c)] >= kth and aff[(r, c)] > 0)
    return out


def test_knn_graph_keeps_top_k_in_every_view():
    torch.manual_seed(0)
    nodes = torch.nn.functional.normalize(torch.randn(2, 13, 8), dim=-1)
    pad = torch.zeros(2, 13, dtype=torch.bool)
    pad[1, 9:] = True
    views = torch.tensor([[0] * 6 + [1] * 7, [0] * 4 + [1] * 5 + [0] * 4])
    adjacency = knn_adjacency(nodes, pad, 2, views)
    assert torch.equal(adjacency, _official_graph(nodes, pad, 2, views))
    assert adjacency[0].sum() == 13 * 2 * 2  # 2 neighbours in each of the 2 views
    cross = (views[0][:, None] != views[0][None, :])
    assert adjacency[0][cross].sum() == 13 * 2  # half the edges cross views
    plain = knn_adjacency(nodes, pad, 4, None)
    assert torch.equal(plain, _official_graph(nodes, pad, 4, torch.zeros(2, 13, dtype=torch.long)))
    assert plain[1, 9:].sum() == 0 and plain[1][:, 9:].sum() == 0


def test_knn_graph_hand_case_two_views():
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    nodes = torch.tensor([[e1, e2, e1, e2]])
    views = torch.tensor([[0, 0, 1, 1]])
    adjacency = knn_adjacency(nodes, torch.zeros(1, 4, dtype=torch.bool), 1, views)
    # own view: the only other node; other view: the equal node
    assert adjacency[0].tolist() == [[0, 1, 1, 0], [1, 0, 0, 1], [1, 0, 0, 1], [0, 1, 1, 0]]


# ---- 8. collapse over node slots at both levels --------------------------------------------------------
def test_collapse_divides_by_node_slots():
    adjacency = torch.zeros(1, 5, 5)
    adjacency[0, 0, 1] = adjacency[0, 1, 0] = 1.0
    probs = torch.tensor([[[0.5, 0.5], [1.0, 0.0], [0, 0], [0, 0], [0, 0]]])
    valid = torch.tensor([[True, True, False, False, False]])
    _, col = dmon_losses(adjacency, probs, valid)
    assert col.item() == pytest.approx(math.hypot(1.5, 0.5) * math.sqrt(2) / 5)


# ---- 6. + one full training step with hand-built batch ----------------------------------------------------------
class FixedClusters(torch.nn.Module):
    """Stands in for a clustering transformer: fixed assignment probabilities and centroids; records inputs."""

    def __init__(self, probs: torch.Tensor, centroids: torch.Tensor) -> None:
        super().__init__()
        self.probs, self.centroids = probs, centroids
        self.calls: list[tuple] = []

    def forward(self, nodes, pad=None, pos=None):
        self.calls.append((nodes.detach().clone(), pad, None if pos is None else pos.detach().clone()))
        n = nodes.shape[1]
        logits = torch.full((1, n, self.probs.shape[-1]), 0.0)
        logits[:, : self.probs.shape[1]] = self.probs.log()
        return ClusterOutput(self.centroids, self.centroids, logits, nodes)


HPARAMS = {
    "embedding_dim": 2, "head_hidden": 4, "output_stride": 16, "test_output_stride": 8, "concentration": 1.0,
    "kmeans_grid": [1, 1], "kmeans_iterations": 1, "kmeans_location": True, "views": 2, "scale_range": [1.0, 1.0],
    "oversegmentation": {"source": "felzenszwalb", "scale": 100, "sigma": 0.8, "min_size": 1},
    "hierarchy": True, "fine_clusters": 2, "coarse_clusters": 2,
    "transformer": {"d_model": 2, "heads": 1, "encoder_layers": 1, "decoder_layers": 1, "ffn": 4, "dropout": 0.0},
    "dmon_knn": 1, "dmon_knn_per_view": True, "dmon_normalizer": "official",
    "loss_weights": {"img_sim": 1.0, "hierarchy": 0.1, "dmon": 0.2, "centroid": 0.5},
    "optimizer": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "transformer_lr_mult": 1},
}


def _hsg(max_nodes) -> HSG:
    context = MethodContext(dataset="synthetic", backbone_name="fcn-resnet50", n_classes=2, batch_size=1,
                            total_steps=1, steps_per_epoch=1, train_res=2, extra={"random_init": True})
    return HSG(None, 2, {**HPARAMS, "max_nodes": max_nodes}, context)


def _segsort(pixel, own, protos, keys):
    """-log(sum_P e^{v.u} / (sum_P + sum_N)), P = same key except own (own if none), kappa = 1."""
    same = [s for s in range(len(protos)) if keys[s] == keys[own] and s != own] or [own]
    other = [s for s in range(len(protos)) if keys[s] != keys[own]]
    pos = sum(math.exp(sum(a * b for a, b in zip(pixel, protos[s]))) for s in same)
    neg = sum(math.exp(sum(a * b for a, b in zip(pixel, protos[s]))) for s in other)
    return -math.log(pos / (pos + neg))


@pytest.mark.parametrize("max_nodes", ["batch", 6])
def test_one_training_step_five_losses_hand_derived(max_nodes):
    torch.manual_seed(0)
    model = _hsg(max_nodes)
    model.augment = ViewAugment(size=2, scale=(1.0, 1.0), flip=False, jitter_p=0.0, gray_p=0.0)
    model.oversegmenter = lambda images, ids: torch.tensor([[[0, 1], [0, 1]]])  # left / right region
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    # both views: left pixel e1, right pixel e2 (a 1 x 2 embedding map)
    model.pixel_embeddings = lambda images: torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]]).expand(2, 2, 1, 2)
    model._probe_code = lambda images: None
    # segments (view, region): s0=(0,L) e1, s1=(0,R) e2, s2=(1,L) e1, s3=(1,R) e2
    p_fine = torch.tensor([[[0.8, 0.2], [0.55, 0.45], [0.7, 0.3], [0.1, 0.9]]])
    c_coarse = torch.tensor([[[0.7, 0.3], [0.1, 0.9]]])
    fine_centroids = torch.tensor([[[2.0, 0.0], [0.0, 3.0]]])
    coarse_centroids = torch.tensor([[[1.0, 1.0], [1.0, -1.0]]])
    model.fine = FixedClusters(p_fine, fine_centroids)
    model.coarse = FixedClusters(c_coarse, coarse_centroids)
    out = model.training_step({"image": torch.rand(1, 3, 2, 2), "id": ["a"]}, 0)

    protos = [e1, e2, e1, e2]
    pixels = [(e1, 0), (e2, 1), (e1, 2), (e2, 3)]
    img_sim = sum(_segsort(v, s, protos, [0, 1, 0, 1]) for v, s in pixels) / 4
    assert img_sim == pytest.approx(math.log(1 + 2 / math.e))  # each pixel: 1 positive e^1, 2 negatives e^0
    fine = sum(_segsort(v, s, protos, [0, 0, 0, 1]) for v, s in pixels) / 4  # argmax of p_fine
    # p_coarse = p_fine . c: [.58,.42], [.43,.57], [.52,.48], [.16,.84] -> groups 0, 1, 0, 1
    coarse = sum(_segsort(v, s, protos, [0, 1, 0, 1]) for v, s in pixels) / 4
    p_coarse = [[sum(p_fine[0, i, j].item() * c_coarse[0, j, m].item() for j in range(2)) for m in range(2)]
                for i in range(4)]
    assert [row.index(max(row)) for row in p_coarse] == [0, 1, 0, 1]
    # graph (COCO rule, k = 1): each node -> the other node of its view and the equal node of the other view
    edges = [(0, 1), (0, 2), (1, 0), (1, 3), (2, 3), (2, 0), (3, 2), (3, 1)]
    slots = 4 if max_nodes == "batch" else 6

    def modularity_and_collapse(p):
        degree = [sum(1 for a, _ in edges if a == i) for i in range(4)]
        z = 2 * sum(degree)
        within = sum(sum(x * y for x, y in zip(p[a], p[b])) for a, b in edges)
        pooled_degree = [sum(degree[i] * p[i][m] for i in range(4)) for m in range(2)]
        expected = sum(v * v for v in pooled_degree) / z
        sums = [sum(p[i][m] for i in range(4)) for m in range(2)]
        return 1 - (within - expected) / z, math.hypot(*sums) * math.sqrt(2) / slots

    mod_f, col_f = modularity_and_collapse(p_fine[0].tolist())
    mod_c, col_c = modularity_and_collapse(p_coarse)
    # centroid contrast: each normalised centroid against the level's centroids, itself the positive
    centroid = 2 * math.log(1 + math.exp(-1.0))  # orthogonal pairs at both levels, kappa 1
    assert out["img_sim"].item() == pytest.approx(img_sim, rel=1e-5)
    assert out["fine"].item() == pytest.approx(fine, rel=1e-5)
    assert out["coarse"].item() == pytest.approx(coarse, rel=1e-5)
    assert out["dmon_modularity"].item() == pytest.approx(mod_f + mod_c, rel=1e-5)
    assert out["dmon_collapse"].item() == pytest.approx(col_f + col_c, rel=1e-5)
    assert out["centroid"].item() == pytest.approx(centroid, rel=1e-5)
    total = img_sim + 0.1 * (fine + coarse) + 0.2 * (mod_f + mod_c + col_f + col_c) + 0.5 * centroid
    assert out["loss"].item() == pytest.approx(total, rel=1e-5)
    # 6. node slots: the batch's largest segment count, or the fixed number
    nodes, pad, pos = model.fine.calls[0]
    assert nodes.shape[1] == slots and pad.sum() == slots - 4
    # 5. the coarse level gets the mean positional embedding of each fine cluster ({s0,s1,s2}, {s3})
    _, coarse_pad, coarse_pos = model.coarse.calls[0]
    assert coarse_pad is None
    assert torch.allclose(coarse_pos[0, 0], pos[0, :3].mean(0)) and torch.allclose(coarse_pos[0, 1], pos[0, 3])


# ---- 14. over-segmentation: UCM maps or an explicit substitute, checked before any work -----------------
def test_missing_ucm_maps_are_a_preflight_error_naming_their_origin(tmp_path):
    from uss_bench.config import resolve
    from uss_bench.pipeline.env import RunEnv
    from uss_bench.pipeline.preflight import preflight
    from uss_bench.spec import RunSpec

    env = RunEnv(data_root=tmp_path)
    spec = RunSpec("hsg", "cityscapes19", "fcn-resnet50")
    (line,) = HSG.preflight_problems(resolve(spec), env)
    assert str(tmp_path / "cityscapes/seginst/pmi_0.05") in line and "PMI-OWT-UCM" in line and "README" in line
    assert "--set 'hparams.oversegmentation={source: felzenszwalb}'" in line
    assert line in preflight([spec], env)  # the shared preflight calls the method's hook
    (line,) = HSG.preflight_problems(resolve(RunSpec("hsg", "potsdam", "fcn-resnet50")), env)
    assert "generate_pmi_owt_ucm.m" in line  # no released maps for Potsdam
    (tmp_path / "cityscapes/seginst/pmi_0.05").mkdir(parents=True)
    assert HSG.preflight_problems(resolve(spec), env) == []
    slic = {"hparams.oversegmentation": {"source": "slic"}}
    explicit = RunSpec("hsg", "cityscapes19", "fcn-resnet50", overrides=slic)
    assert HSG.preflight_problems(resolve(explicit), RunEnv(data_root=tmp_path / "none")) == []
    synthetic = resolve(RunSpec("hsg", "synthetic", "fcn-resnet50", preset="smoke"))
    assert synthetic.hparams["oversegmentation"]["source"] == "felzenszwalb"  # the default only here
    assert HSG.preflight_problems(synthetic, env) == []


def test_ucm_pattern_reads_the_official_cityscapes_names(tmp_path):
    import numpy as np
    from PIL import Image

    from uss_bench.methods.hsg.oversegment import OverSegmenter

    ucm = np.zeros((8, 16), dtype=np.uint8)
    ucm[:, 8:] = 3
    Image.fromarray(ucm).save(tmp_path / "aachen_000000_000019_leftImg8bit.png")
    settings = {"source": "ucm", "ucm_dir": str(tmp_path), "ucm_pattern": "{id}_leftImg8bit.png"}
    regions = OverSegmenter(settings, None, 4)(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), ["aachen_000000_000019"])
    assert regions[0].tolist() == [[0, 0, 1, 1]] * 4


# ---- 11. two stages: stage 2 starts from stage 1's trunk and head --------------------------------------
def test_stage2_starts_from_exported_stage1_weights(tmp_path):
    stage1 = _hsg(256)
    stage1.hparams["export_to"] = str(tmp_path / "stage1.pt")
    with torch.no_grad():
        stage1.head[-1].bias.fill_(0.25)
    stage1.before_eval(None, None)
    stage2 = HSG(None, 2, {**HPARAMS, "max_nodes": 256, "init_from": str(tmp_path / "stage1.pt")},
                 _hsg(256).context)
    for name, value in stage1.state_dict().items():
        if name.startswith(("trunk.", "head.")):
            assert torch.equal(stage2.state_dict()[name], value), name
    torch.save({"head.0.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="does not hold this network's trunk and head"):
        HSG(None, 2, {**HPARAMS, "max_nodes": 256, "init_from": str(tmp_path / "other.pt")}, _hsg(256).context)


def test_coco_stage1_preset_is_the_official_stage1():
    from uss_bench.config import resolve
    from uss_bench.spec import RunSpec

    config = resolve(RunSpec("hsg", "voc12", "fcn-resnet50", preset="coco-stage1"))
    train, h = config.train, config.hparams
    assert (train["batch_size"] * train["accumulate"], train["steps"], train["train_res"]) == (128, 350000, 224)
    assert h["hierarchy"] is False and h["kmeans_grid"] == [1, 1] and h["kmeans_iterations"] == 1
    assert h["optimizer"]["lr"] == 0.1
    stage2 = resolve(RunSpec("hsg", "voc12", "fcn-resnet50"))
    assert (stage2.train["batch_size"] * stage2.train["accumulate"], stage2.train["steps"]) == (48, 20000)
    assert stage2.hparams["optimizer"]["lr"] == 8e-3 and stage2.hparams["loss_weights"]["dmon"] == 1.0


def test_datasets_check_ucm_reports_missing_then_present_maps(tmp_path, capsys):
    from uss_bench.cli import main
    from uss_bench.data.build import build_dataset
    from uss_bench.data.fixtures import write_fixture
    from uss_bench.data.transforms import SegTransform

    write_fixture("voc12", tmp_path)
    args = ["datasets", "check", "voc12", "--ucm", "--data-root", str(tmp_path)]
    ucm_dir = tmp_path / "VOCdevkit/VOC2012/rf_0.25_48"
    assert main(args) == 0 and "voc12 hsg-ucm: ok" in capsys.readouterr().out  # the fixture carries the maps
    shutil.rmtree(ucm_dir)
    assert main(args) == 1
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("voc12 hsg-ucm: MISSING") and "VOCdevkit/VOC2012/rf_0.25_48" in line
    assert "SE-OWT-UCM" in line
    ucm_dir.mkdir(parents=True)
    assert main(args) == 1 and "sampled train ids have no map" in capsys.readouterr().out
    for item in build_dataset("voc12", tmp_path, "train_aug", SegTransform(64)).items:
        (ucm_dir / f"{item.id}.png").write_bytes(b"")
    assert main(args) == 0
    assert "voc12 hsg-ucm: ok" in capsys.readouterr().out


# ---- 12./13. published settings per dataset (scripts, Table 7) -------------------------------------------
@pytest.mark.parametrize("dataset,expected", [
    # bashscripts/cityscapes/train.sh + resnet_fcn_hsg_cs.py
    ("cityscapes19", dict(batch=32, steps=38000, lr=0.1, mult=1, dmon=0.2, centroid=0.2, knn=4,
                          per_view=False, slots="batch", grid=[12, 24])),
    # Table 7 KITTI-STEP row and section 5.8 (k = 4 among views, grid 6 x 12)
    ("kitti-step", dict(batch=48, epochs=400, lr=0.1, dmon=0.2, knn=4, per_view=False, grid=[6, 12])),
    # bashscripts/coco/train.sh stage 2 + resnet_fcn_hsg.py (x10 transformer lr, 256 slots)
    ("voc12", dict(batch=48, steps=20000, lr=8e-3, mult=10, dmon=1.0, centroid=1.0, knn=2,
                   per_view=True, slots=256, grid=[6, 6])),
])
def test_published_settings(dataset, expected):
    from uss_bench.config import published_config, resolve
    from uss_bench.spec import RunSpec

    config = resolve(RunSpec("hsg", dataset, "fcn-resnet50"))
    t, h = config.train, config.hparams
    got = dict(batch=t["batch_size"] * t["accumulate"], steps=t["steps"], epochs=t.get("epochs"), res=t["train_res"],
               lr=h["optimizer"]["lr"], mult=h["optimizer"]["transformer_lr_mult"], dmon=h["loss_weights"]["dmon"],
               centroid=h["loss_weights"]["centroid"], knn=h["dmon_knn"], per_view=h["dmon_knn_per_view"],
               slots=h["max_nodes"], grid=h["inference_kmeans_grid"])
    assert {k: got[k] for k in expected} == expected
    # the card's crop; note: the dataset card's default preset (train_res 224) replaces it at resolve time
    assert published_config(config.card, dataset, "fcn-resnet50")["train"]["train_res"] == 448
    assert h["lr_schedule"] == {"policy": "step", "warmup": 100} and h["loss_weights"]["hierarchy"] == 0.1
