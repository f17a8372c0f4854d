"""End to end: a STEGO model with random weights on the COCO-Stuff fixture, evaluated by the harness
under the ``stego`` protocol, equals an independent computation of the official evaluation.

The official side is written here from STEGO's ``eval_segmentation.py`` / ``src/crf.py`` /
``UnsupervisedMetrics``: PIL opens the files, torchvision ``Resize(res, NEAREST)`` + ``CenterCrop``
on PIL images, ``ToTensor`` + ``Normalize``; DINO's forward with its own position-embedding rule;
the head; flip averaging ``(code1 + flip(code2)) / 2``; bilinear upsampling; ``log_softmax`` of the
probes; the CRF on ``to_pil_image(unnorm(img))[:, :, ::-1]``; the masked histogram, one Hungarian
match, accuracy and mIoU over non-NaN classes. Small sizes keep it to a few seconds on a CPU.
"""

from __future__ import annotations

import math

import numpy as np
import official_stego_crf as official
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.optimize import linear_sum_assignment
from torchvision import transforms as T

from uss_bench.data.build import build_dataset
from uss_bench.data.coco import CocoStuff27
from uss_bench.data.fixtures import write_fixture
from uss_bench.data.transforms import SegTransform
from uss_bench.eval.crf_kernel import crf_image
from uss_bench.eval.engine import evaluate
from uss_bench.eval.probes import Probes
from uss_bench.methods.base import MethodContext
from uss_bench.methods.stego.method import Stego
from uss_bench.registry import BACKBONES, PROTOCOLS

RES = 40  # S/8 -> a 5x5 patch grid: DINO interpolates its 28x28 table
MEAN, STD = official.MEAN, official.STD
N = 27


# ---- the official pipeline, written from its description ------------------------------------------
def official_inputs(image_path, label_path):
    transform = T.Compose([T.Resize(RES, T.InterpolationMode.NEAREST), T.CenterCrop(RES)])
    img = T.Normalize(MEAN, STD)(T.ToTensor()(transform(Image.open(image_path).convert("RGB"))))
    raw = np.asarray(transform(Image.open(label_path))).astype(np.int64)
    return img, torch.from_numpy(CocoStuff27.table[raw])  # the 182 -> 27 map (255 -> -1)


def dino_patch_tokens(vit, img: torch.Tensor, patch: int) -> torch.Tensor:
    b, _, w, h = img.shape  # DINO's names: "w" is the row count
    x = F.conv2d(img, vit.patch_embed.proj.weight, vit.patch_embed.proj.bias, stride=patch).flatten(2).transpose(1, 2)
    x = torch.cat([vit.cls_token.expand(b, -1, -1), x], dim=1)
    n = vit.pos_embed.shape[1] - 1
    pos = vit.pos_embed
    if not (x.shape[1] - 1 == n and w == h):
        side = math.sqrt(n)
        grid = pos[0, 1:].reshape(int(side), int(side), -1).permute(2, 0, 1)[None]
        grid = F.interpolate(grid, scale_factor=((w // patch + 0.1) / side, (h // patch + 0.1) / side),
                             mode="bicubic")
        pos = torch.cat([pos[:, :1], grid[0].permute(1, 2, 0).reshape(1, -1, pos.shape[-1])], dim=1)
    x = x + pos
    for blk in vit.blocks:
        c = x.shape[-1]
        heads = blk.attn.num_heads
        y = F.layer_norm(x, (c,), blk.norm1.weight, blk.norm1.bias, eps=1e-6)
        q, k, v = F.linear(y, blk.attn.qkv.weight, blk.attn.qkv.bias).reshape(b, -1, 3, heads, c // heads) \
            .permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(-1)
        x = x + F.linear((a @ v).transpose(1, 2).reshape(b, -1, c), blk.attn.proj.weight, blk.attn.proj.bias)
        y = F.layer_norm(x, (c,), blk.norm2.weight, blk.norm2.bias, eps=1e-6)
        x = x + F.linear(F.gelu(F.linear(y, blk.mlp.fc1.weight, blk.mlp.fc1.bias)), blk.mlp.fc2.weight,
                         blk.mlp.fc2.bias)
    x = F.layer_norm(x, (x.shape[-1],), vit.norm.weight, vit.norm.bias, eps=1e-6)
    return x[:, 1:].reshape(b, w // patch, h // patch, -1).permute(0, 3, 1, 2)


def official_code(method: Stego, img: torch.Tensor) -> torch.Tensor:
    def net(x):
        f = dino_patch_tokens(method.backbone.vit, x, method.backbone.patch_size)
        head = method.head  # eval mode: dropout is the identity
        lin = F.conv2d(f, head.linear_branch.weight, head.linear_branch.bias)
        c1, c2 = head.nonlinear_branch[0], head.nonlinear_branch[2]
        return lin + F.conv2d(F.relu(F.conv2d(f, c1.weight, c1.bias)), c2.weight, c2.bias)

    code = (net(img) + net(img.flip(dims=[3])).flip(dims=[3])) / 2
    return F.interpolate(code, (RES, RES), mode="bilinear", align_corners=False)


def official_metrics(stats: np.ndarray, hungarian: bool) -> dict:
    hist = stats[np.argsort(linear_sum_assignment(stats, maximize=True)[1])] if hungarian else stats
    tp = np.diag(hist).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (tp + (hist.sum(0) - tp) + (hist.sum(1) - tp))
    return {"acc": 100 * tp.sum() / hist.sum(), "miou": 100 * np.nanmean(iou), "iou": iou}


def update(stats: np.ndarray, preds: np.ndarray, target: np.ndarray) -> None:
    keep = (target >= 0) & (target < N) & (preds >= 0) & (preds < N)
    np.add.at(stats, (preds[keep], target[keep]), 1)


# ---- the test ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fixture("cocostuff27", root)
    torch.manual_seed(0)
    backbone = BACKBONES.get("vit-s8").build(random_init=True)
    ctx = MethodContext(dataset="cocostuff27", backbone_name="vit-s8", n_classes=N, batch_size=2, total_steps=1,
                        steps_per_epoch=1, train_res=224, data_root=None)
    method = Stego(backbone, N, {"dim": 70, "self_shift": 0.18, "knn_shift": 0.12, "rand_shift": 0.46,
                                 "self_weight": 0.67, "knn_weight": 0.25, "rand_weight": 0.63}, ctx).eval()
    probes = Probes(70, N).eval()
    return root, method, probes


def test_harness_under_stego_equals_the_official_evaluation(setup):
    root, method, probes = setup
    dataset = build_dataset("cocostuff27", root, "val", SegTransform(RES, "center", "nearest"))
    protocol = PROTOCOLS.get("stego").with_overrides(eval_res=RES)
    keep = {item.id: None for item in dataset.items}
    ours = evaluate(method, probes, dataset, protocol, [str(i) for i in range(N)], torch.device("cpu"),
                    batch_size=2, predictions_out=keep)

    stats = {k: np.zeros((N, N), np.int64) for k in ("cluster", "linear", "cluster_crf", "linear_crf")}
    raw_cluster = {}
    with torch.no_grad():
        for item in dataset.items:
            img, label = official_inputs(item.image, item.label)
            sample = dataset[dataset.items.index(item)]  # the harness's inputs, checked on the way
            assert torch.equal(sample["label"], label)
            assert torch.equal(T.Normalize(MEAN, STD)(sample["image"].float() / 255), img)
            # the image the harness's CRF kernel hands pydensecrf under this protocol
            rgb = sample["image"].permute(1, 2, 0).numpy()
            assert np.array_equal(crf_image(rgb, protocol.crf_params["image"]), official.crf_image(img))
            code = official_code(method, img[None])
            linear = torch.log_softmax(probes.linear.conv(code), dim=1)
            cluster = torch.log_softmax(2 * torch.einsum("bchw,nc->bnhw", F.normalize(code, dim=1),
                                                         F.normalize(probes.cluster.centroids, dim=1)), dim=1)
            target = label.numpy()
            for key, log_probs in (("linear", linear), ("cluster", cluster)):
                update(stats[key], log_probs.argmax(1)[0].numpy(), target)
                update(stats[f"{key}_crf"], official.dense_crf(img, log_probs[0]), target)
            raw_cluster[item.id] = cluster.argmax(1)[0].numpy()

    for key in stats:
        want = official_metrics(stats[key], hungarian=key.startswith("cluster"))
        got = ours[key]
        assert got["n_pixels"] == stats[key].sum()
        assert got["acc"] == pytest.approx(want["acc"], abs=1e-9), key
        assert got["miou"] == pytest.approx(want["miou"], abs=1e-9), key
        got_iou = np.array([np.nan if v is None else v / 100 for v in got["iou"].values()])
        assert np.allclose(got_iou, want["iou"], equal_nan=True, atol=1e-12), key
    # pixel for pixel: the matched no-CRF cluster predictions
    assignment = linear_sum_assignment(stats["cluster"], maximize=True)[1]
    for image_id, pred in keep.items():
        assert np.array_equal(pred, assignment[raw_cluster[image_id]].astype(np.uint8))
    # the CRF did something, so its columns are a real check
    assert stats["cluster_crf"].tolist() != stats["cluster"].tolist()
