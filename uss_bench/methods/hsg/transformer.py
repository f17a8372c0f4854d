"""HSG's clustering transformer (paper §3.2, Fig. 4 and §5.7; reference §3c).

A DETR-style encoder-decoder (post-norm, BatchNorm in place of LayerNorm, dropout 0.1). The encoder
turns the level-l nodes X_l into Y_l; "statistical feature mapping": the mean and std of Y_l over
the nodes (``masked_mean_std``) go through fc layers and form the decoder input for every query, while the learned
query embeddings act as the queries' positional part. Two heads on the decoder output: the
centroids used for assignment (ReLU-Linear-BN) and the centroid features X_{l+1} passed to the next
level. Transition C_l^{l+1} = softmax over clusters of <centroid_k, y_s> / sqrt(d).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class TokenBatchNorm(nn.Module):
    """BatchNorm1d over every token of [B, n, d] (padded ones included, as the official _BatchNorm1d)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.reshape(-1, x.shape[-1])).view_as(x)


class EncoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, d))
        self.norm1, self.norm2 = TokenBatchNorm(d), TokenBatchNorm(d)
        self.drop1, self.drop2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None, pos: torch.Tensor | None) -> torch.Tensor:
        qk = x if pos is None else x + pos
        x = self.norm1(x + self.drop1(self.attn(qk, qk, x, key_padding_mask=pad, need_weights=False)[0]))
        return self.norm2(x + self.drop2(self.ffn(x)))


class DecoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, d))
        self.norms = nn.ModuleList([TokenBatchNorm(d) for _ in range(3)])
        self.drops = nn.ModuleList([nn.Dropout(dropout) for _ in range(3)])

    def forward(self, t: torch.Tensor, memory: torch.Tensor, pad: torch.Tensor | None, pos: torch.Tensor | None,
                query_pos: torch.Tensor) -> torch.Tensor:
        q = t + query_pos
        t = self.norms[0](t + self.drops[0](self.self_attn(q, q, t, need_weights=False)[0]))
        key = memory if pos is None else memory + pos
        attended = self.cross_attn(t + query_pos, key, memory, key_padding_mask=pad, need_weights=False)[0]
        t = self.norms[1](t + self.drops[1](attended))
        return self.norms[2](t + self.drops[2](self.ffn(t)))


@dataclass
class ClusterOutput:
    centroids: torch.Tensor  # [B, K, d] assignment centroids (the ones contrasted)
    features: torch.Tensor  # [B, K, d] X_{l+1}, input of the next level
    logits: torch.Tensor  # [B, n, K] <centroid_k, y_s> / sqrt(d)
    memory: torch.Tensor  # [B, n, d] Y_l

    def transition(self, pad: torch.Tensor | None = None) -> torch.Tensor:
        """Row-stochastic [B, n, K]; padded rows are zeroed."""
        probs = self.logits.softmax(dim=-1)
        return probs if pad is None else probs * (~pad)[..., None].to(probs.dtype)


class ClusteringTransformer(nn.Module):
    def __init__(self, n_clusters: int, d: int = 128, heads: int = 4, encoder_layers: int = 2,
                 decoder_layers: int = 2, ffn: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = nn.ModuleList([EncoderLayer(d, heads, ffn, dropout) for _ in range(encoder_layers)])
        self.decoder = nn.ModuleList([DecoderLayer(d, heads, ffn, dropout) for _ in range(decoder_layers)])
        self.decoder_norm = TokenBatchNorm(d)
        self.queries = nn.Embedding(n_clusters, d)
        # statistical feature mapping: [mean; std] of Y_l -> decoder input
        self.stats_fc = nn.Sequential(nn.Linear(2 * d, ffn, bias=False), nn.BatchNorm1d(ffn), nn.ReLU(),
                                      nn.Linear(ffn, d))
        self.centroid_fc = nn.Sequential(nn.ReLU(), nn.Linear(d, d, bias=False), nn.BatchNorm1d(d))
        self.feature_fc = nn.Sequential(nn.ReLU(), nn.Linear(d, d, bias=False), nn.BatchNorm1d(d))
        self.d = d
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, nodes: torch.Tensor, pad: torch.Tensor | None = None, pos: torch.Tensor | None = None
                ) -> ClusterOutput:
        """nodes [B, n, d], pad [B, n] (True = padding), pos [B, n, d] or None."""
        memory = nodes
        for layer in self.encoder:
            memory = layer(memory, pad, pos)
        t = self.stats_fc(masked_mean_std(memory, pad))[:, None].expand(-1, self.queries.num_embeddings, -1)
        query_pos = self.queries.weight[None].expand(nodes.shape[0], -1, -1)
        for layer in self.decoder:
            t = layer(t, memory, pad, pos, query_pos)
        t = self.decoder_norm(t)
        flat = t.reshape(-1, self.d)
        centroids = self.centroid_fc(flat).view_as(t)
        features = self.feature_fc(flat).view_as(t)
        logits = memory @ centroids.transpose(1, 2) / math.sqrt(self.d)
        return ClusterOutput(centroids, features, logits, memory)


def masked_mean_std(x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
    """[B, n, d] -> [B, 2d] = [mean; std] of the encoder output, the official statistic.

    With a padding mask (fine level): mean over the valid tokens; the squared deviations are summed
    over *every* slot, a padded slot (zeroed) contributing (0 - mean)^2, and divided by count + 1.
    Without one (coarse level): ``torch.std``, i.e. divided by n - 1.
    """
    if pad is None:
        mean = x.mean(dim=1)
        var = x.var(dim=1, unbiased=True)
    else:
        weight = (~pad).to(x.dtype)[..., None]
        count = weight.sum(1).clamp(min=1)
        masked = x * weight
        mean = masked.sum(1) / count
        var = ((masked - mean[:, None]) ** 2).sum(1) / (count + 1)
    return torch.cat([mean, var.clamp(min=1e-12).sqrt()], dim=-1)  # eps: sqrt'(0) is inf (official has none)


def group_means(values: torch.Tensor, labels: torch.Tensor, pad: torch.Tensor | None, n_groups: int) -> torch.Tensor:
    """values [B, n, d], labels [B, n] in [0, n_groups) -> [B, n_groups, d] mean over the non-padded
    nodes of each group; an empty group gets 0 (the official ``_collect_nd_coarser_prototype``)."""
    weight = torch.ones_like(labels, dtype=values.dtype) if pad is None else (~pad).to(values.dtype)
    onehot = F.one_hot(labels, n_groups).to(values.dtype) * weight[..., None]  # [B, n, K]
    sums = onehot.transpose(1, 2) @ values
    return sums / onehot.sum(1)[..., None].clamp(min=1e-12)


def propagate(fine: torch.Tensor, transition: torch.Tensor) -> torch.Tensor:
    """P_{l+1} = P_l . C_l^{l+1}: [B, n, K_l] x [B, K_l, K_{l+1}] -> [B, n, K_{l+1}]."""
    return fine @ transition
