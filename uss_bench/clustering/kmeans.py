"""k-means in torch, replacing PiCIE's FAISS calls (reference §1c).

Why torch and not faiss-cpu: no extra dependency, the same code runs on the GPU the official code
used (faiss-gpu) and on CPU, it is seeded by a torch.Generator (bit-identical reruns), and the
distances are chunked so 1 M x 128 vectors need no N x K x D temporary.

``lloyd`` mirrors ``faiss.Clustering`` as PiCIE configures it: K distinct random points as the
initial centroids, ``niter`` assignment/mean rounds, no sub-sampling (max_points_per_centroid 1e7),
and FAISS's empty-cluster repair (an empty centroid takes a copy of a large cluster's centroid,
both nudged apart symmetrically). ``MiniBatchKMeans`` is PiCIE's ``run_mini_batch_kmeans``:
accumulate the first ``init_points`` vectors, fit them with ``lloyd``, then update each centroid
with every further chunk as mu_k <- (1 - eta_k) mu_k + eta_k mean(chunk_k), eta_k = n_k / N_k.
"""

from __future__ import annotations

import torch

CHUNK = 65536  # rows per distance block: 65536 x K floats at a time
_EPS_SPLIT = 1.0 / 1024  # FAISS's symmetric perturbation when splitting a cluster


def sq_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """||x - c||^2 for [N, D] x [K, D] -> [N, K] (expanded form, as FAISS computes it)."""
    return (x * x).sum(1, keepdim=True) - 2.0 * x @ centroids.T + (centroids * centroids).sum(1)[None]


def assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid and its squared distance for every row of ``x``, in chunks."""
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dists = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], chunk):
        d = sq_distances(x[start : start + chunk], centroids)
        dists[start : start + chunk], labels[start : start + chunk] = d.min(dim=1)
    return labels, dists


def _means(x: torch.Tensor, labels: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    counts = torch.bincount(labels, minlength=k).to(x.dtype)
    return sums, counts


def _split_empty(centroids: torch.Tensor, counts: torch.Tensor, generator: torch.Generator) -> None:
    """FAISS: each empty cluster copies a cluster picked with probability ~ its size, both perturbed."""
    n = counts.sum()
    for k in torch.nonzero(counts == 0).flatten().tolist():
        probs = (counts - 1).clamp(min=0) / (n - counts.numel()).clamp(min=1)
        if probs.sum() <= 0:
            continue
        donor = int(torch.multinomial(probs.cpu().double(), 1, generator=generator))
        centroids[k] = centroids[donor]
        sign = torch.ones_like(centroids[k])
        sign[1::2] = -1  # FAISS alternates the sign of the nudge over dimensions
        centroids[k] *= 1 + _EPS_SPLIT * sign
        centroids[donor] *= 1 - _EPS_SPLIT * sign
        counts[k] = counts[donor] / 2
        counts[donor] -= counts[k]


def lloyd(x: torch.Tensor, k: int, niter: int = 20, seed: int = 0, init: torch.Tensor | None = None) -> torch.Tensor:
    """Fit k centroids to ``x`` [N, D] with ``niter`` Lloyd rounds; returns [k, D].

    ``init``: starting centroids; by default k distinct random points (FAISS's init, not k-means++).
    """
    if x.ndim != 2:
        raise ValueError(f"k-means expects [N, D] vectors, got shape {tuple(x.shape)}")
    if x.shape[0] < k:
        raise ValueError(f"k-means: {x.shape[0]} vectors cannot make {k} clusters")
    generator = torch.Generator().manual_seed(seed)
    if init is None:
        centroids = x[torch.randperm(x.shape[0], generator=generator)[:k].to(x.device)].clone()
    else:
        centroids = init.to(x).clone()
    for _ in range(niter):
        labels, _ = assign(x, centroids)
        sums, counts = _means(x, labels, k)
        nonempty = counts > 0
        centroids[nonempty] = sums[nonempty] / counts[nonempty, None]
        _split_empty(centroids, counts, generator)
    return centroids


class MiniBatchKMeans:
    """PiCIE's streaming k-means: fit on the first ``init_points`` vectors, then update per chunk."""

    def __init__(self, k: int, init_points: int, update_points: int, niter: int = 20, seed: int = 0) -> None:
        self.k, self.init_points, self.update_points = k, init_points, update_points
        self.niter, self.seed = niter, seed
        self.centroids: torch.Tensor | None = None
        self.counts = torch.zeros(k, dtype=torch.float64)
        self._pending: list[torch.Tensor] = []
        self._pending_n = 0
        self.losses: list[float] = []

    def add(self, x: torch.Tensor) -> None:
        """Feed [N, D] vectors (any device); updates happen whenever a chunk is full."""
        self._pending.append(x.detach().float())
        self._pending_n += x.shape[0]
        need = self.init_points if self.centroids is None else self.update_points
        if self._pending_n >= need:
            self._consume()

    def finish(self) -> torch.Tensor:
        """Use what is left (PiCIE fits on fewer points when the split is smaller than the init size)."""
        if self._pending_n:
            self._consume()
        if self.centroids is None:
            raise ValueError("k-means was given no vectors")
        return self.centroids

    def _consume(self) -> None:
        x = torch.cat(self._pending)
        self._pending, self._pending_n = [], 0
        if self.centroids is None:
            self.centroids = lloyd(x, self.k, self.niter, self.seed)
            labels, dists = assign(x, self.centroids)
            self.counts += torch.bincount(labels, minlength=self.k).double().cpu()
            self.losses.append(float(dists.mean()))
            return
        labels, dists = assign(x, self.centroids)
        self.losses.append(float(dists.mean()))
        sums, counts = _means(x, labels, self.k)
        self.counts += counts.double().cpu()
        present = counts > 0
        eta = (counts[present].double().cpu() / (self.counts[present.cpu()] + 1e-6)).to(x)
        means = sums[present] / counts[present, None]
        self.centroids[present] = (1 - eta[:, None]) * self.centroids[present] + eta[:, None] * means
