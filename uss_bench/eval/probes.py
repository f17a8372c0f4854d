"""The evaluation probes of STEGO/HP/PPAP (reference §0.5), trained on detached embeddings.

- Cluster probe: K centroids; score = cosine(x, mu_k); loss = -mean_p max_k score (an SGD form of
  spherical k-means where only the winning centroid gets gradient).
- Linear probe: a 1x1 conv with bias; cross-entropy on pixels with 0 <= y < n_classes after
  bilinear upsampling of the logits to the label size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uss_bench.data.transforms import upsample


class ClusterProbe(nn.Module):
    def __init__(self, dim: int, n_clusters: int) -> None:
        super().__init__()
        self.centroids = nn.Parameter(torch.randn(n_clusters, dim))

    def scores(self, code: torch.Tensor) -> torch.Tensor:
        """code [B,C,H,W] -> cosine scores [B,K,H,W]."""
        return torch.einsum("bchw,kc->bkhw", F.normalize(code, dim=1), F.normalize(self.centroids, dim=1))

    def loss(self, code: torch.Tensor) -> torch.Tensor:
        return -self.scores(code.detach()).max(dim=1).values.mean()

    def crf_logits(self, code: torch.Tensor) -> torch.Tensor:
        """The official CRF input: log_softmax(2 * cos), i.e. temperature 0.5."""
        return F.log_softmax(2.0 * self.scores(code), dim=1)


class LinearProbe(nn.Module):
    def __init__(self, dim: int, n_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, n_classes, kernel_size=1)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.conv(code)

    def loss(self, code: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = upsample(self(code.detach()), tuple(labels.shape[-2:]))
        n = logits.shape[1]
        target = labels.clone()
        target[(target < 0) | (target >= n)] = -1
        if not (target >= 0).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, ignore_index=-1)


class Probes(nn.Module):
    def __init__(self, dim: int, n_classes: int, extra_clusters: int = 0) -> None:
        super().__init__()
        self.cluster = ClusterProbe(dim, n_classes + extra_clusters)
        self.linear = LinearProbe(dim, n_classes)
