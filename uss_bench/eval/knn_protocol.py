"""Segment-retrieval k-NN evaluation of SegSort/HSG (reference §3b), the ``knn-segments`` evaluator.

1. Memory bank: every labelled training image is embedded, split into segments by per-image
   spherical k-means (grid init, no over-segmentation at test time), and each segment becomes a
   prototype (normalised mean embedding) labelled with the majority ground-truth label of its pixels;
   segments whose majority is "ignore" are dropped.
2. Each test segment takes the unweighted majority label of its top-k (20) cosine neighbours in
   the bank; all its pixels get that label.
3. mIoU over all classes with absent classes counted as 0 (HSG's benchmark_by_mIoU.py).
Labels are used only here, by design of the protocol: the bank is built from train ground truth.
The same pass also scores Normalized Foreground Covering of the method's hierarchical segments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from uss_bench.clustering.spherical_kmeans import kmeans_segments, segment_means
from uss_bench.data.base import collate
from uss_bench.data.transforms import IMAGENET_MEAN, cv2_nearest_resize, to_unit_float, upsample
from uss_bench.eval.confusion import ConfusionAccumulator
from uss_bench.eval.evaluators import register_evaluator
from uss_bench.eval.matching import identity
from uss_bench.eval.metrics import segmentation_metrics
from uss_bench.eval.nfcovering import HierarchyCovering


@dataclass
class MemoryBank:
    prototypes: torch.Tensor  # [M, D] unit vectors
    labels: torch.Tensor  # [M] class ids


def segment_majority_labels(segments: torch.Tensor, labels: torch.Tensor, n_segments: int,
                            n_classes: int) -> torch.Tensor:
    """[N] segment ids, [N] GT (-1 ignore) -> [S] majority class, -1 where "ignore" wins or empty."""
    gt = torch.where((labels >= 0) & (labels < n_classes), labels, torch.full_like(labels, n_classes))
    keep = segments >= 0
    counts = torch.zeros(n_segments, n_classes + 1, dtype=torch.long, device=segments.device)
    counts.index_put_((segments[keep], gt[keep]), torch.ones_like(gt[keep]), accumulate=True)
    winner = counts.argmax(dim=1)  # ties -> the smaller class id
    return torch.where((winner == n_classes) | (counts.sum(1) == 0), torch.full_like(winner, -1), winner)


def knn_vote(queries: torch.Tensor, bank: MemoryBank, k: int, n_classes: int) -> torch.Tensor:
    """[Q, D] unit queries -> [Q] labels by unweighted majority of the top-k cosine neighbours."""
    if bank.prototypes.shape[0] == 0:
        raise ValueError("the k-NN memory bank is empty: no training segment has a labelled majority")
    k = min(k, bank.prototypes.shape[0])
    neighbours = (queries @ bank.prototypes.T).topk(k, dim=1).indices
    votes = F.one_hot(bank.labels[neighbours], n_classes).sum(dim=1)
    return votes.argmax(dim=1)  # ties -> the smaller class id


def _loader(dataset: Dataset, batch_size: int, num_workers: int, geometry: dict[str, Any] | None) -> DataLoader:
    if geometry is not None:
        # The official inference reads each file at its own size, one image at a time (sizes differ);
        # the harness resize/crop to eval_res is skipped.
        at_file_size = getattr(dataset, "at_file_size", None)
        dataset, batch_size = (at_file_size() if at_file_size is not None else dataset), 1
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate,
                      generator=torch.Generator().manual_seed(0))


DEFAULT_GRID = (6, 6)  # VOC's inference grid (bashscripts/coco/train.sh)


def inference_grid(method: Any, protocol: Any) -> tuple[int, int]:
    """The protocol's grid if set, else the method's per-dataset ``inference_kmeans_grid``, else 6x6."""
    if protocol.kmeans_grid is not None:
        return tuple(int(v) for v in protocol.kmeans_grid)
    grid = (getattr(method, "hparams", None) or {}).get("inference_kmeans_grid")
    return tuple(int(v) for v in grid) if grid else DEFAULT_GRID


def inference_geometry(method: Any, protocol: Any) -> dict[str, Any] | None:
    """The method's official inference geometry (``inference_geometry`` hparam: image_size, crop,
    stride) unless the protocol asks for the harness geometry (``geometry: harness``)."""
    if protocol.geometry == "harness":
        return None
    geometry = (getattr(method, "hparams", None) or {}).get("inference_geometry")
    return dict(geometry) if geometry else None


def _segments(method: Any, images: torch.Tensor, size: tuple[int, int], protocol: Any,
              grid: tuple[int, int], geometry: dict[str, Any] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings [B, D, h, w] and their k-means segments [B, h, w] at the working size: the label
    size, or with ``geometry`` the official inference size (see ``official_geometry_segments``)."""
    if geometry is not None:
        return official_geometry_segments(method, images, protocol, grid, geometry)
    emb = F.normalize(upsample(method.embed(images).float(), size), dim=1)
    segs = kmeans_segments(emb, grid, protocol.kmeans_iterations, protocol.kmeans_location)
    return emb, segs


def official_geometry_segments(method: Any, images: torch.Tensor, protocol: Any, grid: tuple[int, int],
                               geometry: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The official inference (pyscripts/inference/prototype.py, inference.py) on the given images,
    which the evaluator reads at their file size.

    Resize so the longer side is ``image_size`` (bilinear, sizes truncated, as cv2 there), pad right/bottom
    with the ImageNet mean (0 after normalisation) to at least ``crop``, embed sliding ``crop``
    windows at ``stride`` (each embedding bilinearly upsampled to its window, unit-normalised,
    overlaps averaged), then k-means with the grid laid over the padded canvas and padding ignored.
    Returns embeddings and segments cropped to the resized image [B, D, rh, rw], [B, rh, rw].
    """
    b, _, h, w = images.shape
    ratio = min(float(geometry["image_size"]) / h, float(geometry["image_size"]) / w)
    rh, rw = int(ratio * h), int(ratio * w)
    crop_h, crop_w = (int(v) for v in geometry["crop"])
    stride_h, stride_w = (int(v) for v in geometry["stride"])
    resized = F.interpolate(images, size=(rh, rw), mode="bilinear", align_corners=False)
    ph, pw = max(rh, crop_h), max(rw, crop_w)
    canvas = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand(b, 3, ph, pw).clone()
    canvas[:, :, :rh, :rw] = resized
    ends_h = np.linspace(crop_h, ph, math.ceil((ph - crop_h) / stride_h) + 1, dtype=np.int32)
    ends_w = np.linspace(crop_w, pw, math.ceil((pw - crop_w) / stride_w) + 1, dtype=np.int32)
    total, counts = None, canvas.new_zeros(1, 1, ph, pw)
    for eh in ends_h:
        for ew in ends_w:
            window = canvas[:, :, eh - crop_h : eh, ew - crop_w : ew]
            emb = F.normalize(upsample(method.embed(window).float(), (crop_h, crop_w)), dim=1)
            if total is None:
                total = emb.new_zeros(b, emb.shape[1], ph, pw)
            total[:, :, eh - crop_h : eh, ew - crop_w : ew] += emb
            counts[:, :, eh - crop_h : eh, ew - crop_w : ew] += 1
    emb = total / counts  # averaged, not renormalised (as official)
    valid = torch.zeros(b, ph, pw, dtype=torch.bool, device=images.device)
    valid[:, :rh, :rw] = True
    segs = kmeans_segments(emb, grid, protocol.kmeans_iterations, protocol.kmeans_location, valid)
    return emb[:, :, :rh, :rw], segs[:, :rh, :rw]


def _to_size(labels: torch.Tensor, size: tuple[int, int], geometry: dict[str, Any] | None = None) -> torch.Tensor:
    """Nearest resize of integer maps [B, H, W] (labels to the working size, predictions back): OpenCV's
    rule under the official geometry (its inference resizes both with cv2), else torch's."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    if geometry is not None:
        return cv2_nearest_resize(labels, size)
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


@torch.no_grad()
def build_memory_bank(method: Any, dataset: Dataset, protocol: Any, n_classes: int, device: torch.device,
                      batch_size: int = 16, num_workers: int = 0) -> MemoryBank:
    protos, labels = [], []
    grid = inference_grid(method, protocol)
    geometry = inference_geometry(method, protocol)
    n_seg = grid[0] * grid[1]
    for batch in _loader(dataset, batch_size, num_workers, geometry):
        gt = batch["label"].to(device)
        images = to_unit_float(batch["image"].to(device))
        emb, segs = _segments(method, images, tuple(gt.shape[-2:]), protocol, grid, geometry)
        gt = _to_size(gt, tuple(segs.shape[-2:]), geometry)  # the official bank reads labels resized (nearest)
        for b in range(emb.shape[0]):
            flat = emb[b].flatten(1).T
            seg = segs[b].reshape(-1)
            present = torch.unique(seg[seg >= 0])
            means = segment_means(flat, seg, n_seg)[present]
            majority = segment_majority_labels(seg, gt[b].reshape(-1), n_seg, n_classes)[present]
            keep = majority >= 0
            protos.append(means[keep])
            labels.append(majority[keep])
    return MemoryBank(torch.cat(protos), torch.cat(labels))


@register_evaluator("knn-segments")
@torch.no_grad()
def evaluate_knn_segments(method: Any, protocol: Any, train_set: Dataset, eval_set: Dataset, class_names: list[str],
                          device: torch.device, batch_size: int = 16, num_workers: int = 0,
                          **_: Any) -> dict[str, Any]:
    """Returns {"knn": {acc, miou, iou, n_pixels, memory_size}, "nfcovering": {level: percent}}."""
    was_training = method.training
    method.eval()
    n_classes = len(class_names)
    bank = build_memory_bank(method, train_set, protocol, n_classes, device, batch_size, num_workers)
    confusion = ConfusionAccumulator(n_classes, n_classes)
    covering: HierarchyCovering | None = None
    grid = inference_grid(method, protocol)
    geometry = inference_geometry(method, protocol)
    n_seg = grid[0] * grid[1]
    for batch in _loader(eval_set, batch_size, num_workers, geometry):
        gt = batch["label"]
        images = to_unit_float(batch["image"].to(device))
        emb, segs = _segments(method, images, tuple(gt.shape[-2:]), protocol, grid, geometry)
        pred = torch.full_like(segs, -1)
        for b in range(emb.shape[0]):
            seg = segs[b].reshape(-1)
            present = torch.unique(seg[seg >= 0])
            votes = knn_vote(segment_means(emb[b].flatten(1).T, seg, n_seg)[present], bank, protocol.knn_k, n_classes)
            lookup = torch.full((n_seg,), -1, dtype=torch.long, device=seg.device)
            lookup[present] = votes
            pred[b] = lookup[segs[b].clamp(min=0)]
        label_size = tuple(gt.shape[-2:])
        confusion.update(_to_size(pred, label_size, geometry), gt)  # back to the label (file) size, nearest
        levels = _hierarchy(method, images, _to_size(segs, label_size, geometry))
        if covering is None:
            covering = HierarchyCovering([name for name, _ in levels], protocol.nfc_background, protocol.nfc_regions)
        for b in range(gt.shape[0]):
            covering.update([maps[b].cpu().numpy() for _, maps in levels], gt[b].numpy())
    method.train(was_training)
    metrics = segmentation_metrics(confusion.matrix, identity(confusion.matrix), "absent_as_zero").as_dict(class_names)
    metrics.update(n_pixels=int(confusion.matrix.sum()), memory_size=int(bank.labels.numel()), k=protocol.knn_k,
                   kmeans_grid=list(grid), geometry=_geometry_record(geometry, protocol))
    return {"knn": metrics, "nfcovering": covering.result() if covering is not None else {}}


def _geometry_record(geometry: dict[str, Any] | None, protocol: Any) -> str:
    """Where the segments were computed, as one line in the record (a string: not a metric)."""
    if geometry is None:
        return f"harness: eval_res {protocol.eval_res}, crop {protocol.crop}"
    (ch, cw), (sh, sw) = geometry["crop"], geometry["stride"]
    return (f"official: file size, longer side -> {geometry['image_size']}, padded to {ch}x{cw}, "
            f"windows {ch}x{cw} at stride {sh}x{sw}")


def _hierarchy(method: Any, images: torch.Tensor, segments: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The method's hierarchical segmentations if it has them (HSG), else the k-means segments alone."""
    hook = getattr(method, "hierarchical_segments", None)
    levels = hook(images, segments) if hook is not None else None
    return levels if levels else [("segments", segments)]

