"""Cluster -> class assignments.

``hungarian``: one-to-one, maximising matched pixels (scipy ``linear_sum_assignment``), done once
on the split's confusion matrix. ``majority``: many-to-one, each cluster takes the class it
overlaps most. ``identity``: cluster i is class i (the linear probe). Unmatched clusters map to -1
and their pixels count as errors. STEGO's metric instead drops pixels predicted as a cluster id
>= n_classes before matching (protocol option ``extra_cluster_pixels``; see eval/metrics.py).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def hungarian(confusion: torch.Tensor | np.ndarray) -> np.ndarray:
    """[n_clusters, n_classes] counts -> assignment[cluster] = class or -1."""
    counts = np.asarray(confusion, dtype=np.float64)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    assignment = np.full(counts.shape[0], -1, dtype=np.int64)
    assignment[rows] = cols
    return assignment


def majority(confusion: torch.Tensor | np.ndarray) -> np.ndarray:
    counts = np.asarray(confusion)
    assignment = counts.argmax(axis=1).astype(np.int64)
    assignment[counts.sum(axis=1) == 0] = -1  # an empty cluster claims nothing
    return assignment


def identity(confusion: torch.Tensor | np.ndarray) -> np.ndarray:
    n_pred, n_gt = np.asarray(confusion).shape
    assignment = np.arange(n_pred, dtype=np.int64)
    assignment[assignment >= n_gt] = -1
    return assignment


MATCHERS = {"hungarian": hungarian, "majority": majority, "identity": identity}


def match(confusion: torch.Tensor | np.ndarray, rule: str) -> np.ndarray:
    if rule not in MATCHERS:
        raise ValueError(f"unknown matching rule {rule!r}; known: {', '.join(MATCHERS)}")
    return MATCHERS[rule](confusion)
