"""Pixel accuracy, per-class IoU and mIoU from a matched confusion matrix.

Differences from STEGO's ``UnsupervisedMetrics`` (reference §0.3), both deliberate:
- pixels in clusters left unmatched (more clusters than classes) count as errors: they stay in the
  accuracy denominator and are false negatives of their true class. STEGO's mask drops them, which
  inflates scores with extra clusters (recorded as a fixed bug in the protocol notes);
- the averaging rule is a protocol option: ``skip_absent`` (STEGO/HP/PPAP: a class absent from both
  ground truth and predictions is NaN and skipped) or ``absent_as_zero`` (HSG's kNN protocol).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

AVERAGING = ("skip_absent", "absent_as_zero")


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
