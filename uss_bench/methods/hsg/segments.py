"""Segments = per-view spherical k-means clusters intersected with over-segmentation regions.

Everything is computed at the embedding resolution (region maps are downsampled nearest). Segment
ids are global over the whole batch of views; each segment knows its view, its source image, its
region, and so its positive key for the pixel-to-segment loss: (source image, region id), shared
by both views of an image (multiview co-segmentation, reference §3d).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from uss_bench.clustering.spherical_kmeans import kmeans_segments, segment_means


@dataclass
class Segments:
    pixel_segment: torch.Tensor  # [V*h*w] global segment id, -1 = ignored pixel
    prototypes: torch.Tensor  # [S, D] unit mean embedding (differentiable)
    region_key: torch.Tensor  # [S] (source image, region) key
    view: torch.Tensor  # [S] view index
    source: torch.Tensor  # [S] source image index
    position: torch.Tensor  # [S, 2] mean (row, col) at embedding resolution

    @property
    def count(self) -> int:
        return self.prototypes.shape[0]


def downsample_regions(regions: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(regions[:, None].float(), size=size, mode="nearest")[:, 0].long()


def build_segments(embeddings: torch.Tensor, regions: torch.Tensor, source: torch.Tensor, grid: tuple[int, int],
                   iterations: int, with_location: bool = True) -> Segments:
    """embeddings [V, D, h, w] (unit), regions [V, h, w] (-1 ignore), source [V] -> Segments."""
    v, d, h, w = embeddings.shape
    valid = regions >= 0
    clusters = kmeans_segments(embeddings.detach(), grid, iterations, with_location, valid)
    n_clusters = grid[0] * grid[1]
    n_regions = int(regions.max().clamp(min=0)) + 1
    view = torch.arange(v, device=embeddings.device).view(v, 1, 1)
    combined = (view * n_regions + regions.clamp(min=0)) * n_clusters + clusters.clamp(min=0)
    combined = torch.where(valid, combined, torch.full_like(combined, -1)).reshape(-1)
    keep = combined >= 0
    uniq, inverse = torch.unique(combined[keep], return_inverse=True)
    pixel_segment = torch.full_like(combined, -1)
    pixel_segment[keep] = inverse
    seg_view = uniq // (n_regions * n_clusters)
    seg_region = (uniq // n_clusters) % n_regions
    seg_source = source[seg_view]
    flat = embeddings.permute(0, 2, 3, 1).reshape(-1, d)
    prototypes = segment_means(flat, pixel_segment, uniq.numel())
    rows = torch.arange(h, device=embeddings.device).view(1, h, 1).expand(v, h, w).reshape(-1).float()
    cols = torch.arange(w, device=embeddings.device).view(1, 1, w).expand(v, h, w).reshape(-1).float()
    counts = torch.zeros(uniq.numel(), device=embeddings.device).index_add_(0, inverse, torch.ones_like(rows[keep]))
    pos = torch.zeros(uniq.numel(), 2, device=embeddings.device)
    pos.index_add_(0, inverse, torch.stack([rows[keep], cols[keep]], dim=1))
    return Segments(pixel_segment, prototypes, seg_source * n_regions + seg_region, seg_view, seg_source,
                    pos / counts.clamp(min=1)[:, None])


def per_image_nodes(values: torch.Tensor, source: torch.Tensor, n_images: int, max_nodes: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack the segments of each source image (both views) into padded node sets.

    values [S, ...] -> nodes [n_images, max_nodes, ...], padding mask [n_images, max_nodes] (True =
    pad), and slot [S] (flat index image*max_nodes + position, -1 when the image overflowed).
    """
    order = torch.argsort(source, stable=True)
    counts = torch.bincount(source, minlength=n_images)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(source)
    rank[order] = torch.arange(source.numel(), device=source.device) - starts[source[order]]
    fits = rank < max_nodes
    slot = torch.where(fits, source * max_nodes + rank, torch.full_like(rank, -1))
    nodes = values.new_zeros((n_images * max_nodes, *values.shape[1:]))
    nodes[slot[fits]] = values[fits]
    pad = torch.ones(n_images * max_nodes, dtype=torch.bool, device=values.device)
    pad[slot[fits]] = False
    return nodes.view(n_images, max_nodes, *values.shape[1:]), pad.view(n_images, max_nodes), slot
