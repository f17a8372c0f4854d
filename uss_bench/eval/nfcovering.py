"""Normalized Foreground Covering (HSG paper, Eq. 10) for hierarchical segmentations.

    NFCovering(S' -> S_fg) = 1/|S_fg| * sum_{R in S_fg} max_{R' in S'} |R n R'| / |R u R'|

S_fg are the ground-truth foreground regions of one image, S' the predicted regions at one level of
the hierarchy. Unlike the classic Covering, every foreground region weighs the same whatever its
size. The official repository has no implementation (reference §3b); the choices below are ours:
- a ground-truth region is the set of pixels of one foreground class (``regions="class"``) or one
  4-connected component of it (``regions="component"``);
- ignore pixels (label < 0) are removed from both sides before the IoUs;
- an image without foreground regions does not count; the split score is the mean over images.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage


def ground_truth_regions(gt: np.ndarray, background: Iterable[int] = (0,), regions: str = "class") -> list[np.ndarray]:
    """Boolean masks of the foreground regions of one label map (ignore < 0)."""
    if regions not in ("class", "component"):
        raise ValueError(f"regions must be 'class' or 'component', got {regions!r}")
    skip = set(int(b) for b in background)
    masks = []
    for value in np.unique(gt):
        if value < 0 or int(value) in skip:
            continue
        mask = gt == value
        if regions == "class":
            masks.append(mask)
        else:
            components, n = ndimage.label(mask)
            masks.extend(components == i for i in range(1, n + 1))
    return masks


def nf_covering(pred: np.ndarray, gt: np.ndarray, background: Iterable[int] = (0,), regions: str = "class") -> float:
    """Eq. 10 for one image and one level; NaN when the image has no foreground region."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != label shape {gt.shape}")
    valid = gt >= 0
    fg = ground_truth_regions(np.where(valid, gt, -1), background, regions)
    if not fg:
        return float("nan")
    pred_ids, pred_index = np.unique(pred[valid], return_inverse=True)
    pred_sizes = np.bincount(pred_index, minlength=len(pred_ids))
    scores = []
    for region in fg:
        inside = region[valid]
        overlap = np.bincount(pred_index[inside], minlength=len(pred_ids))
        union = pred_sizes + inside.sum() - overlap
        scores.append(float((overlap / np.maximum(union, 1)).max()))
    return float(np.mean(scores))


class HierarchyCovering:
    """Mean NFCovering per hierarchy level over a split (values in percent)."""

    def __init__(self, levels: Sequence[str], background: Iterable[int] = (0,), regions: str = "class") -> None:
        self.levels = list(levels)
        self.background = tuple(background)
        self.regions = regions
        self.scores: dict[str, list[float]] = {level: [] for level in self.levels}

    def update(self, segmentations: Sequence[np.ndarray], gt: np.ndarray) -> None:
        """One image: one predicted region map per level (same order as ``levels``)."""
        if len(segmentations) != len(self.levels):
            raise ValueError(f"expected {len(self.levels)} levels, got {len(segmentations)}")
        for level, seg in zip(self.levels, segmentations):
            value = nf_covering(seg, gt, self.background, self.regions)
            if not np.isnan(value):
                self.scores[level].append(value)

    def result(self) -> dict[str, float]:
        return {level: (100.0 * float(np.mean(v)) if v else float("nan")) for level, v in self.scores.items()}
