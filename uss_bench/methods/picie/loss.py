"""PiCIE's clustering loss: cross-entropy against k-means pseudo-labels, weighted per cluster."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """PyTorch's weighted mean CE, as the official criterion: sum_i w_yi nll_i / sum_i w_yi."""
    return F.cross_entropy(logits, labels, weight=weight)


def class_weights(counts: torch.Tensor, rule: str) -> torch.Tensor:
    """``proportional`` (official: w_k = n_k / sum n), ``inverse`` (w_k ~ 1/n_k) or ``none``."""
    counts = counts.double()
    if rule == "proportional":
        return (counts / counts.sum()).float()
    if rule == "inverse":
        inv = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
        return (inv / inv.sum()).float()
    if rule == "none":
        return torch.ones_like(counts).float()
    raise ValueError(f"picie: class_weights must be proportional, inverse or none, got {rule!r}")
