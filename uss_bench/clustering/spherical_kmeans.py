"""Per-image spherical (vMF) k-means with a grid initialisation, as SegSort and HSG use it.

Features are unit vectors; the initial labels are the official rounded ``gh x gw`` grid (``grid_labels``); the
M-step takes the normalised sum of each cluster, the E-step the highest cosine. HSG appends the
pixel position, (y, x) in [-0.5, 0.5], to the normalised embedding and renormalises (reference §3c).
Used by HSG's training (segments) and by the segment-kNN protocol (test segments).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def grid_labels(h: int, w: int, grid: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """[h*w] initial cell of each pixel, as the official ``initialize_cluster_labels``.

    Row cell = round(linspace(0, gh - 1, h)[y]), column cell likewise (round half to even), so the
    border cells are about half as tall/wide as the inner ones (28 rows, 4 cells: 5/9/9/5 rows).
    Cells are numbered column-major (row cell + n_row_cells * column cell) and made consecutive,
    which fixes the order of the k-means clusters and so the E-step's tie-breaking.
    """
    gh, gw = grid
    rows = torch.linspace(0, gh - 1, h, device=device).round().long()
    cols = torch.linspace(0, gw - 1, w, device=device).round().long()
    cells = rows[:, None] + (int(rows.max()) + 1) * cols[None, :]
    return torch.unique(cells.reshape(-1), return_inverse=True)[1]


def location_features(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """[h*w, 2] normalised (y, x) in [-0.5, 0.5]."""
    ys = torch.linspace(-0.5, 0.5, h, device=device) if h > 1 else torch.zeros(1, device=device)
    xs = torch.linspace(-0.5, 0.5, w, device=device) if w > 1 else torch.zeros(1, device=device)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(-1, 2)


def clustering_features(embeddings: torch.Tensor, with_location: bool = True) -> torch.Tensor:
    """[B, D, H, W] embeddings -> [B, H*W, D(+2)] unit vectors to cluster."""
    b, _, h, w = embeddings.shape
    feats = F.normalize(embeddings.flatten(2).transpose(1, 2), dim=-1)
    if with_location:
        loc = location_features(h, w, embeddings.device).to(feats.dtype).expand(b, -1, -1)
        feats = F.normalize(torch.cat([feats, loc], dim=-1), dim=-1)
    return feats


@torch.no_grad()
def spherical_kmeans(feats: torch.Tensor, init_labels: torch.Tensor, n_clusters: int, iterations: int,
                     valid: torch.Tensor | None = None) -> torch.Tensor:
    """feats [B, N, D] unit vectors; init_labels [N] or [B, N] -> labels [B, N] (invalid pixels -1).

    ``iterations`` counts M+E steps; 0 returns the initial labels. Empty clusters get a zero
    centroid and so win no pixel afterwards.
    """
    b, n, _ = feats.shape
    labels = init_labels.expand(b, n).clone() if init_labels.dim() == 1 else init_labels.clone()
    valid = torch.ones(b, n, dtype=torch.bool, device=feats.device) if valid is None else valid
    for _ in range(iterations):
        onehot = F.one_hot(labels.clamp(min=0), n_clusters).to(feats.dtype) * valid[..., None]
        centroids = F.normalize(onehot.transpose(1, 2) @ feats, dim=-1)  # [B, K, D]
        labels = (feats @ centroids.transpose(1, 2)).argmax(dim=-1)
    return torch.where(valid, labels, torch.full_like(labels, -1))


def kmeans_segments(embeddings: torch.Tensor, grid: tuple[int, int], iterations: int,
                    with_location: bool = True, valid: torch.Tensor | None = None) -> torch.Tensor:
    """[B, D, H, W] -> per-image segment labels [B, H, W] in [0, gh*gw) (or -1 where not valid)."""
    b, _, h, w = embeddings.shape
    feats = clustering_features(embeddings, with_location)
    init = grid_labels(h, w, grid, embeddings.device)
    flat_valid = None if valid is None else valid.reshape(b, -1)
    return spherical_kmeans(feats, init, grid[0] * grid[1], iterations, flat_valid).reshape(b, h, w)


def segment_means(embeddings: torch.Tensor, segments: torch.Tensor, n_segments: int) -> torch.Tensor:
    """embeddings [N, D], segments [N] (-1 ignored) -> normalised mean embedding per segment [S, D]."""
    keep = segments >= 0
    sums = torch.zeros(n_segments, embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device)
    sums.index_add_(0, segments[keep], F.normalize(embeddings[keep], dim=-1))
    return F.normalize(sums, dim=-1)
