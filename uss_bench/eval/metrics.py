"""Pixel accuracy, per-class IoU and mIoU from a matched confusion matrix.

Relation to STEGO's ``UnsupervisedMetrics`` (reference §0.3; copied by HP and PPAP):
- with as many clusters as classes the numbers are equal (one Hungarian match on the split's
  confusion matrix, accuracy = matched / all kept pixels, mIoU over non-NaN classes);
- with extra clusters (cluster ids >= n_classes) the official ``update`` masks out every pixel
  *predicted* as such an id before the histogram is built, so those clusters never take part in
  the Hungarian matching and their pixels leave the accuracy denominator and the class counts.
  That is ``extra_cluster_pixels = "drop_before_matching"`` (:func:`prepare_cluster_confusion`).
  The harness default ``"error"`` keeps every pixel: all clusters enter the matching, and pixels of
  clusters left unmatched count as errors (in the denominator, false negatives of their class).
  Not reproduced: when a Hungarian tie leaves a cluster id < n_classes unmatched, the official
  ``compute`` also appends one more IoU entry (0) to the mIoU average;
- the averaging rule is a protocol option: ``skip_absent`` (STEGO/HP/PPAP: a class absent from both
  ground truth and predictions is NaN and skipped) or ``absent_as_zero`` (HSG's kNN protocol).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from uss_bench.eval.protocol_choices import AVERAGING, EXTRA_CLUSTER_PIXELS  # noqa: E402,F401 - re-exported


def prepare_cluster_confusion(confusion: torch.Tensor | np.ndarray, extra_cluster_pixels: str) -> np.ndarray:
    """The cluster confusion [n_clusters, n_classes] to match and score under the protocol's rule.

    ``drop_before_matching`` zeroes the rows of cluster ids >= n_classes, as the official mask
    ``preds < n_classes`` does before anything is counted; ``error`` leaves the matrix as it is.
    """
    if extra_cluster_pixels not in EXTRA_CLUSTER_PIXELS:
        known = ", ".join(EXTRA_CLUSTER_PIXELS)
        raise ValueError(f"unknown extra_cluster_pixels {extra_cluster_pixels!r}; known: {known}")
    if isinstance(confusion, torch.Tensor):
        confusion = confusion.cpu().numpy()
    conf = np.array(confusion, dtype=np.int64)
    if extra_cluster_pixels == "drop_before_matching":
        conf[conf.shape[1] :] = 0
    return conf


@dataclass
class SegMetrics:
    acc: float  # percent
    miou: float  # percent
    iou: np.ndarray  # per class, fraction in [0,1], NaN where 0/0
    assignment: np.ndarray  # cluster -> class (-1 unmatched)
    class_confusion: np.ndarray  # [n_classes, n_classes] predicted class x true class

    def as_dict(self, class_names: list[str]) -> dict:
        return {
            "acc": self.acc,
            "miou": self.miou,
            "iou": {name: (None if np.isnan(v) else float(100 * v)) for name, v in zip(class_names, self.iou)},
        }


def class_confusion(confusion: np.ndarray, assignment: np.ndarray, n_classes: int) -> np.ndarray:
    """Sum cluster rows into their assigned class rows; unmatched rows are dropped from the diagonal."""
    out = np.zeros((n_classes, confusion.shape[1]), dtype=np.int64)
    for cluster, cls in enumerate(assignment):
        if cls >= 0:
            out[cls] += confusion[cluster]
    return out


def segmentation_metrics(
    confusion: torch.Tensor | np.ndarray, assignment: np.ndarray, averaging: str = "skip_absent"
) -> SegMetrics:
    if averaging not in AVERAGING:
        raise ValueError(f"unknown mIoU averaging {averaging!r}; known: {', '.join(AVERAGING)}")
    conf = np.asarray(confusion, dtype=np.int64)
    n_classes = conf.shape[1]
    matched = class_confusion(conf, assignment, n_classes)
    total = conf.sum()  # includes pixels of unmatched clusters: they are errors
    tp = np.diag(matched).astype(np.float64)
    predicted = matched.sum(axis=1)
    actual = conf.sum(axis=0)
    denom = predicted + actual - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
    acc = 100.0 * tp.sum() / total if total > 0 else float("nan")
    if averaging == "skip_absent":
        miou = 100.0 * float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")
    else:
        miou = 100.0 * float(np.nan_to_num(iou, nan=0.0).mean())
    return SegMetrics(float(acc), miou, iou, assignment, matched)
