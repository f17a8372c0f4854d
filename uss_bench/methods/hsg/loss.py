"""HSG's losses (reference §3d; paper Eqs. 3 and 8).

- ``segsort_contrastive``: the SegSort pixel-to-segment NCA loss with concentration kappa (= 1/T).
- ``knn_adjacency`` + ``dmon_losses``: DMoN modularity and collapse on a binarised kNN graph of the
  segment prototypes (the official ``affinity_matrix_as_attention`` + ``DMonLoss``). The official
  code normalises by Z = 2 * sum(d), twice the standard 2m = sum(d); ``normalizer="official"``
  reproduces it, ``"standard"`` is DMoN's.
- ``centroid_contrast``: every normalised centroid against all centroids of the batch, itself the
  only positive (a repulsion / uniformity term).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def segsort_contrastive(pixels: torch.Tensor, pixel_segment: torch.Tensor, prototypes: torch.Tensor,
                        segment_key: torch.Tensor, concentration: float = 16.0) -> torch.Tensor:
    """Mean over pixels of -log( sum_P e^{k v.u} / (sum_P e^{k v.u} + sum_N e^{k v.u}) ).

    pixels [N, D] unit embeddings, pixel_segment [N] (-1 ignored), prototypes [S, D] unit,
    segment_key [S]. P(i): segments with the key of i's segment except its own (its own segment
    when there is no other); N(i): segments with another key.
    """
    keep = pixel_segment >= 0
    pixels, own = pixels[keep], pixel_segment[keep]
    logits = concentration * pixels @ prototypes.T  # [N, S]
    same = segment_key[own][:, None] == segment_key[None, :]
    is_own = torch.zeros_like(same)
    is_own[torch.arange(own.numel(), device=own.device), own] = True
    positive = same & ~is_own
    positive = torch.where(positive.any(dim=1, keepdim=True), positive, is_own)
    negative = ~same
    neg_inf = torch.finfo(logits.dtype).min
    log_pos = torch.logsumexp(logits.masked_fill(~positive, neg_inf), dim=1)
    log_all = torch.logsumexp(logits.masked_fill(~(positive | negative), neg_inf), dim=1)
    return (log_all - log_pos).mean()


@torch.no_grad()
def knn_adjacency(nodes: torch.Tensor, pad: torch.Tensor, k: int, group: torch.Tensor | None = None,
                  bandwidth: float = 5.0) -> torch.Tensor:
    """Binarised kNN graph [B, n, n] of exp(bandwidth * <x_i, x_j>), the official rule.

    Padded nodes get no edges; self-loops are removed when a graph has more than one valid node.
    Without ``group`` every node keeps its k most similar valid nodes (ties at the k-th value kept).
    With ``group`` ([B, n], the view of each node: HSG's COCO variant) every node keeps its k most
    similar nodes *in every group*, k capped by the group's size, so about half the edges of two
    views cross them. The graph is not symmetrised.
    """
    b, n, _ = nodes.shape
    valid = ~pad
    affinity = torch.exp(bandwidth * nodes @ nodes.transpose(1, 2))
    affinity = affinity * (valid[:, :, None] & valid[:, None, :]).to(affinity.dtype)
    several = valid.sum(dim=1) > 1
    self_loop = torch.eye(n, dtype=torch.bool, device=nodes.device)[None] & several[:, None, None]
    affinity = affinity.masked_fill(self_loop, 0.0)
    group = torch.zeros_like(pad, dtype=torch.long) if group is None else group
    for i in range(b):
        for g in torch.unique(group[i][valid[i]]):
            columns = valid[i] & (group[i] == g)
            kth = affinity[i][:, columns].topk(min(k, int(columns.sum())), dim=1).values[:, -1]
            affinity[i] = affinity[i].masked_fill(columns[None, :] & (affinity[i] < kth[:, None]), 0.0)
    return (affinity > 0).to(nodes.dtype)


def dmon_losses(adjacency: torch.Tensor, assignment: torch.Tensor, valid: torch.Tensor | None = None,
                normalizer: str = "official") -> tuple[torch.Tensor, torch.Tensor]:
    """DMoN on graphs [B, n, n] with soft assignments [B, n, k] -> (modularity loss, collapse loss).

    modularity = mean_b 1 - Tr(C^T A C - C^T d d^T C / Z) / Z, Z = 2 sum(d) (official) or sum(d);
    collapse = mean_b ||sum_i C_i|| * sqrt(k) / n, n = node slots including padding (official).
    """
    if normalizer not in ("official", "standard"):
        raise ValueError(f"DMoN normalizer must be 'official' or 'standard', got {normalizer!r}")
    _, n, k = assignment.shape
    if valid is not None:
        assignment = assignment * valid[..., None].to(assignment.dtype)
    degree = adjacency.sum(dim=-1)  # [B, n]
    z = degree.sum(dim=-1) * (2.0 if normalizer == "official" else 1.0)
    z = z.clamp(min=1e-12)
    pooled = assignment.transpose(1, 2) @ adjacency @ assignment  # [B, k, k]
    pooled_degree = assignment.transpose(1, 2) @ degree[..., None]  # [B, k, 1]
    expected = pooled_degree @ pooled_degree.transpose(1, 2) / z[:, None, None]
    modularity = 1.0 - torch.diagonal(pooled - expected, dim1=1, dim2=2).sum(-1) / z
    collapse = assignment.sum(dim=1).norm(dim=-1) * math.sqrt(k) / n
    return modularity.mean(), collapse.mean()


def centroid_contrast(centroids: torch.Tensor, concentration: float = 16.0) -> torch.Tensor:
    """centroids [M, D] (all images and queries of the batch) -> mean -log softmax_j(k z_m.z_j)[m]."""
    z = F.normalize(centroids, dim=-1)
    logits = concentration * z @ z.T
    return F.cross_entropy(logits, torch.arange(z.shape[0], device=z.device))
