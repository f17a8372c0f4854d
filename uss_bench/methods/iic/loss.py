"""IIC's segmentation objective: invariant information over a window of displacements (reference §2d).

For paired soft assignments a = phi(img1) and b = T^-1(phi(img2)) (k x H x W each, both multiplied by
the mask), the joint for a displacement t is J(t)_ij = sum_n sum_p a_i(n, p + t) b_j(n, p), with zeros
outside the image. All (2d+1)^2 joints come out of one conv2d: channels = clusters, the batch acts as
the input-channel axis, and b is the filter (padding d).

Uncollapsed form (used for every paper result): normalise and symmetrise each J(t), then average
-sum_ij P_ij (ln P_ij - lam ln P_i - lam ln P_j) over t. Collapsed form: sum J over t first.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

EPS = sys.float_info.epsilon  # IIC clamps with Python's float epsilon (2.2e-16)


def displaced_joints(a: torch.Tensor, b: torch.Tensor, half_window: int) -> torch.Tensor:
    """Unnormalised joints for every displacement: [T, T, k, k] with T = 2 d + 1.

    ``a``, ``b``: [B, k, H, W]. Entry [dy + d, dx + d, i, j] = sum_n sum_p a_i(n, p + (dy, dx)) b_j(n, p).
    """
    if a.shape != b.shape:
        raise ValueError(f"IID loss: the two output maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    # conv2d(input [k, B, H, W], weight [k, B, H, W], padding d) -> [k, k, T, T]
    joint = F.conv2d(a.transpose(0, 1).contiguous(), b.transpose(0, 1).contiguous(), padding=half_window)
    return joint.permute(2, 3, 0, 1)


def _information(p: torch.Tensor, lamb: float) -> tuple[torch.Tensor, torch.Tensor]:
    """-sum_ij P_ij (ln P_ij - lamb ln P_i - lamb ln P_j) over the last two axes (and the same with lamb = 1)."""
    p = (p + p.transpose(-1, -2)) / 2.0  # symmetrise
    p_i = p.sum(dim=-1, keepdim=True).expand_as(p)
    p_j = p.sum(dim=-2, keepdim=True).expand_as(p)
    # clamp for the logs only, as IIC does; tiny entries are multiplied by ~0 anyway
    p, p_i, p_j = p.clamp(min=EPS), p_i.clamp(min=EPS), p_j.clamp(min=EPS)
    log_p, log_i, log_j = p.log(), p_i.log(), p_j.log()
    loss = -(p * (log_p - lamb * log_i - lamb * log_j)).sum(dim=(-1, -2))
    loss_no_lamb = -(p * (log_p - log_i - log_j)).sum(dim=(-1, -2))
    return loss, loss_no_lamb


def iid_segmentation_loss(
    x1: torch.Tensor,
    x2_inv: torch.Tensor,
    lamb: float = 1.0,
    half_window: int = 10,
    mask: torch.Tensor | None = None,
    collapsed: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, loss without lambda) for softmax maps [B, k, H, W]; ``x2_inv`` is already in img1's frame.

    ``mask`` [B, H, W] multiplies both maps (IIC's COCO runs used a ground-truth mask here; uss-bench
    passes none, see the card).
    """
    if mask is not None:
        m = mask[:, None].to(x1.dtype)
        x1, x2_inv = x1 * m, x2_inv * m
    joints = displaced_joints(x1, x2_inv, half_window)  # [T, T, k, k]
    if collapsed:
        total = joints.sum(dim=(0, 1))
        return _information(total / total.sum(), lamb)
    p = joints / joints.sum(dim=(-1, -2), keepdim=True)
    loss, loss_no_lamb = _information(p, lamb)
    return loss.mean(), loss_no_lamb.mean()  # mean over the (2d+1)^2 displacements
