"""The hsg-knn protocol: segment-prototype memory bank + top-k majority vote."""

import numpy as np
import pytest
import torch
from torch import nn

from uss_bench.eval.evaluators import extra_metrics
from uss_bench.eval.knn_protocol import (
    MemoryBank,
    evaluate_knn_segments,
    inference_grid,
    knn_vote,
    segment_majority_labels,
)
from uss_bench.registry import PROTOCOLS


def test_segment_majority_drops_ignore_majorities():
    segments = torch.tensor([0, 0, 0, 1, 1, 1, 2, -1])
    labels = torch.tensor([2, 2, 1, -1, -1, 0, 1, 1])
    # segment 0: two 2s; segment 1: ignore wins -> dropped; segment 2: class 1; segment 3: empty
    assert segment_majority_labels(segments, labels, 4, 3).tolist() == [2, -1, 1, -1]


def test_knn_vote_unweighted_majority_of_top_k():
    bank = MemoryBank(torch.tensor([[1.0, 0.0], [0.9, 0.436], [0.8, 0.6], [0.0, 1.0]]), torch.tensor([0, 1, 1, 2]))
    query = torch.tensor([[1.0, 0.0]])
    assert knn_vote(query, bank, k=1, n_classes=3).tolist() == [0]
    assert knn_vote(query, bank, k=3, n_classes=3).tolist() == [1]  # 0, 1, 1: the majority, not the nearest
    assert knn_vote(query, bank, k=20, n_classes=3).tolist() == [1]  # k capped at the bank size
    with pytest.raises(ValueError, match="memory bank is empty"):
        knn_vote(query, MemoryBank(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)), 3, 3)


class ColourMethod(nn.Module):
    """Embeds a pixel by its red and green intensity."""

    def embed(self, images):
        return images[:, :2] + 1e-3


def _scene(flip: bool, index: int) -> dict:
    image = torch.zeros(3, 4, 4, dtype=torch.uint8)
    label = torch.full((4, 4), 2)
    red = slice(2, 4) if flip else slice(0, 2)
    image[0, :, red] = 255
    image[1] = 255 - image[0]
    label[:, red] = 1
    return {"image": image, "label": label, "id": str(index), "index": index}


def test_evaluate_knn_segments_end_to_end_counts_absent_classes_as_zero():
    protocol = PROTOCOLS.get("hsg-knn").with_overrides(kmeans_grid=(1, 2), kmeans_iterations=3,
                                                       kmeans_location=False, knn_k=2)
    train = [_scene(False, 0), _scene(True, 1)]
    evaluation = [_scene(True, 0)]
    out = evaluate_knn_segments(ColourMethod(), protocol, train, evaluation, ["bg", "red", "green"],
                                torch.device("cpu"), batch_size=2)
    knn = out["knn"]
    assert knn["acc"] == pytest.approx(100.0)
    assert knn["miou"] == pytest.approx(200.0 / 3)  # class "bg" is absent: IoU 0, not skipped
    assert knn["memory_size"] == 4 and knn["n_pixels"] == 16
    # no hierarchy hook: the k-means segments are the one level; background id 0 is absent here
    assert out["nfcovering"] == {"segments": pytest.approx(100.0)}


def test_protocol_is_registered_with_its_knn_fields():
    protocol = PROTOCOLS.get("hsg-knn")
    data = protocol.as_dict()
    assert data["evaluator"] == "knn-segments" and data["knn_k"] == 20
    assert data["miou_averaging"] == "absent_as_zero" and data["crf"] is False
    assert protocol.with_overrides(knn_k=5).knn_k == 5
    assert extra_metrics(None, PROTOCOLS.get("uss"), None, None) == {}


def test_inference_grid_follows_the_method_card_unless_the_protocol_sets_one():
    protocol = PROTOCOLS.get("hsg-knn")
    assert protocol.kmeans_grid is None
    cityscapes = ColourMethod()
    cityscapes.hparams = {"inference_kmeans_grid": [12, 24]}  # bashscripts/cityscapes/train.sh
    assert inference_grid(cityscapes, protocol) == (12, 24)
    assert inference_grid(ColourMethod(), protocol) == (6, 6)  # VOC's grid when the method names none
    assert inference_grid(cityscapes, protocol.with_overrides(kmeans_grid=(2, 3))) == (2, 3)


def test_evaluation_uses_the_official_grid_partition():
    # 1 x 10 image, grid 1 x 4: linspace(0, 3, 10) = i/3 rounded -> 0,0,1,1,1,2,2,2,3,3 (equal cells
    # would give 0,0,0,1,1,2,2,2,3,3)
    method = ColourMethod()
    method.hparams = {"inference_kmeans_grid": [1, 4]}
    protocol = PROTOCOLS.get("hsg-knn").with_overrides(kmeans_iterations=0, kmeans_location=False)
    from uss_bench.eval.knn_protocol import _segments

    _, segs = _segments(method, torch.rand(1, 3, 1, 10), (1, 10), protocol, inference_grid(method, protocol))
    assert segs[0, 0].tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 3, 3]


class RecordingMethod(ColourMethod):
    def __init__(self, geometry):
        super().__init__()
        self.hparams = {"inference_kmeans_grid": [2, 2], "inference_geometry": geometry}
        self.windows = []

    def embed(self, images):
        self.windows.append(images.clone())
        return super().embed(images)


def test_official_geometry_resizes_pads_and_slides_windows():
    from uss_bench.data.transforms import IMAGENET_MEAN
    from uss_bench.eval.knn_protocol import _segments, inference_geometry

    protocol = PROTOCOLS.get("hsg-knn").with_overrides(kmeans_iterations=0, kmeans_location=False)
    method = RecordingMethod({"image_size": 12, "crop": [12, 12], "stride": [12, 12]})
    images = torch.rand(1, 3, 4, 6)
    emb, segs = _segments(method, images, (4, 6), protocol, (2, 2), inference_geometry(method, protocol))
    # longer side 6 -> 12: ratio 2, resized 8 x 12, padded to the 12 x 12 crop with the ImageNet mean
    (window,) = method.windows
    assert window.shape == (1, 3, 12, 12)
    assert torch.allclose(window[0, :, 8:, :], torch.tensor(IMAGENET_MEAN).view(3, 1, 1).expand(3, 4, 12))
    assert emb.shape == (1, 2, 8, 12) and segs.shape == (1, 8, 12)
    # the grid lies over the padded 12 x 12 canvas: rows round(i/11) -> rows 0-5 | 6-11; columns alike
    assert segs[0, :, 0].tolist() == [0] * 6 + [1] * 2 and segs[0, 0, :].tolist() == [0] * 6 + [2] * 6
    sliding = RecordingMethod({"image_size": 16, "crop": [8, 8], "stride": [4, 4]})
    _segments(sliding, torch.rand(1, 3, 4, 8), (4, 8), protocol, (2, 2), inference_geometry(sliding, protocol))
    assert len(sliding.windows) == 3  # 8 x 16 canvas, windows ending at 8, 12, 16
    assert inference_geometry(sliding, protocol.with_overrides(geometry="harness")) is None


def test_evaluate_knn_segments_at_official_geometry():
    method = ColourMethod()
    method.hparams = {"inference_kmeans_grid": [1, 2], "inference_geometry": {"image_size": 8, "crop": [8, 8],
                                                                                "stride": [8, 8]}}
    protocol = PROTOCOLS.get("hsg-knn").with_overrides(kmeans_iterations=3, kmeans_location=False, knn_k=2)
    out = evaluate_knn_segments(method, protocol, [_scene(False, 0), _scene(True, 1)], [_scene(True, 0)],
                                ["bg", "red", "green"], torch.device("cpu"), batch_size=2)
    assert out["knn"]["acc"] == pytest.approx(100.0) and out["knn"]["n_pixels"] == 16  # scored at label size


def _cv2_linear_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV INTER_LINEAR along one axis (imgproc/resize.cpp): source x = (i + 0.5) * n_in/n_out - 0.5
    as float32, floor, clamped to the first/last pixel with weight 0 there. Returns (i0, i1, weight of i1)."""
    scale = 1.0 / (n_out / n_in)
    i0, i1, frac = [], [], []
    for i in range(n_out):
        x = np.float32((i + 0.5) * scale - 0.5)
        s = int(np.floor(x))
        f = float(x - s)
        if s < 0:
            s, f = 0, 0.0
        if s >= n_in - 1:
            s, f = n_in - 1, 0.0
        i0.append(s)
        i1.append(min(s + 1, n_in - 1))
        frac.append(f)
    return np.array(i0), np.array(i1), np.array(frac)


def _cv2_bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """[C, H, W] float -> [C, out_h, out_w], rows then columns (separable, as OpenCV)."""
    r0, r1, fr = _cv2_linear_axis(image.shape[1], out_h)
    c0, c1, fc = _cv2_linear_axis(image.shape[2], out_w)
    rows = image[:, r0] * (1 - fr)[None, :, None] + image[:, r1] * fr[None, :, None]
    return rows[:, :, c0] * (1 - fc) + rows[:, :, c1] * fc


def test_official_geometry_reads_each_file_at_its_own_size(tmp_path):
    """hsg-knn (geometry official) starts from the image file, as pyscripts/inference/inference.py: the
    harness eval_res resize/crop is skipped, one image per batch, scored at the label file's size."""
    from PIL import Image

    from uss_bench.data.build import build_dataset
    from uss_bench.data.fixtures import write_fixture
    from uss_bench.data.transforms import IMAGENET_MEAN, SegTransform

    write_fixture("voc12", tmp_path)  # 40 x 30 files
    train = build_dataset("voc12", tmp_path, "train_aug", SegTransform(16))
    evaluation = build_dataset("voc12", tmp_path, "val", SegTransform(16))
    method = RecordingMethod({"image_size": 48, "crop": [48, 48], "stride": [48, 48]})
    protocol = PROTOCOLS.get("hsg-knn").with_overrides(kmeans_iterations=2, kmeans_location=False, knn_k=3)
    out = evaluate_knn_segments(method, protocol, train, evaluation, train.classes, torch.device("cpu"),
                                batch_size=2)
    # 3 bank images then 2 eval images, one window each: 30 x 40 -> 36 x 48 (longer side 48), padded to 48
    assert [tuple(w.shape) for w in method.windows] == [(1, 3, 48, 48)] * 5
    root = tmp_path / "VOCdevkit" / "VOC2012"
    first = evaluation.items[0].id
    pixels = np.asarray(Image.open(root / "JPEGImages" / f"{first}.jpg").convert("RGB"))
    expected = np.empty((3, 48, 48), dtype=np.float64)
    expected[:] = np.asarray(IMAGENET_MEAN)[:, None, None]
    expected[:, :36, :48] = _cv2_bilinear(pixels.transpose(2, 0, 1).astype(np.float64) / 255, 36, 48)
    assert np.abs(method.windows[3][0].double().numpy() - expected).max() < 1e-5
    # scored at the label files' size (2 x 30 x 40 less the 255 pixels), not at eval_res 16 x 16
    labelled = sum(int((np.asarray(Image.open(root / "SegmentationClassAug" / f"{item.id}.png")) != 255).sum())
                   for item in evaluation.items)
    assert out["knn"]["n_pixels"] == labelled and labelled > 2 * 16 * 16
    assert out["knn"]["geometry"].startswith("official: file size, longer side -> 48")
    assert evaluation.transform == SegTransform(16)  # the file-size view leaves the split untouched
    harness = RecordingMethod(None)
    out = evaluate_knn_segments(harness, protocol, train, evaluation, train.classes, torch.device("cpu"),
                                batch_size=2)
    assert [tuple(w.shape) for w in harness.windows] == [(2, 3, 16, 16), (1, 3, 16, 16), (2, 3, 16, 16)]
    assert out["knn"]["geometry"] == "harness: eval_res 320, crop center"
