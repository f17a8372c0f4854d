"""STEGO's segmentation head, shared by STEGO and HP (reference §1c, §HP-c).

code = W1 * drop(f) + W3 * ReLU(W2 * drop(f)): a linear 1x1 branch plus a 1x1-ReLU-1x1 branch, each
fed its own ``Dropout2d(0.1)`` sample of the frozen DINO features, as the official featurizer does.
"""

from __future__ import annotations

import torch
from torch import nn


class SegmentationHead(nn.Module):
    def __init__(self, in_dim: int, dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout2d(p=dropout)
        self.linear_branch = nn.Conv2d(in_dim, dim, kernel_size=1)
        self.nonlinear_branch = nn.Sequential(
            nn.Conv2d(in_dim, in_dim, kernel_size=1), nn.ReLU(), nn.Conv2d(in_dim, dim, kernel_size=1)
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """feats [B, D, h, w] -> code [B, dim, h, w]; each branch draws its own dropout mask."""
        return self.linear_branch(self.dropout(feats)) + self.nonlinear_branch(self.dropout(feats))


@torch.no_grad()
def ema_update(online: nn.Module, ema: nn.Module, momentum: float) -> None:
    """theta_ema <- m * theta_ema + (1 - m) * theta (HP's ema_model_update; buffers are copied)."""
    for p_online, p_ema in zip(online.parameters(), ema.parameters(), strict=True):
        p_ema.mul_(momentum).add_(p_online.detach(), alpha=1.0 - momentum)
    for b_online, b_ema in zip(online.buffers(), ema.buffers(), strict=True):
        b_ema.copy_(b_online)
