"""SEAT and SAN's losses (paper Eqs. 3, 6-9).

- ``seat``: Theta = softmax(Q Gamma^T / sqrt(d)) Gamma, per image.
- ``reconstruction_losses``: the consistency sustainer. One shared decoder F_G reconstructs the
  image from the pixel embeddings Q (L_Rec) and from the SEAT output Theta (L_Con), both L2 (MSE).
- ``orthogonality_loss``: uniformity of the semantic embeddings. Eq. 6 writes S^T S = E; with S
  of shape [N, P] we read it as S S^T = E on unit rows (cosine similarities), i.e. the mean squared
  off-diagonal cosine (paper: "a cosine similarity loss").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def attention_logits(q: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """q [B, HW, d], gamma [B, N, d] -> [B, HW, N] = Q Gamma^T / sqrt(d)."""
    return q @ gamma.transpose(1, 2) / math.sqrt(q.shape[-1])


def seat(q: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SEAT(Q, S) = softmax(Q S^T / sqrt(d)) S -> (Theta [B, HW, d], attention [B, HW, N])."""
    attention = attention_logits(q, gamma).softmax(dim=-1)
    return attention @ gamma, attention


def reconstruction_losses(decoder: torch.nn.Module, q_map: torch.Tensor, theta_map: torch.Tensor,
                          target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_Rec, L_Con) = (MSE(F_G(Q), x), MSE(F_G(Theta), x)) with the same decoder F_G."""
    return F.mse_loss(decoder(q_map), target), F.mse_loss(decoder(theta_map), target)


def orthogonality_loss(semantics: torch.Tensor) -> torch.Tensor:
    """semantics [..., N, d] -> mean over off-diagonal pairs of cos(s_i, s_j)^2."""
    s = F.normalize(semantics, dim=-1)
    gram = s @ s.transpose(-1, -2)
    n = gram.shape[-1]
    off = gram - torch.eye(n, device=gram.device, dtype=gram.dtype)
    return (off**2).sum(dim=(-1, -2)).mean() / max(n * (n - 1), 1)
