"""SAN's networks (paper Fig. 2/3): pixel-wise encoder, semantic-wise generator, consistency decoder.

The paper gives the structure and the 1024-d embedding length but not the layer sizes (Fig. 3 is a
drawing; no code is public). Every size here is ours unless the paper states it; see methods/san.yaml.
"""

from __future__ import annotations

import torch
from torch import nn

from uss_bench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize


class PixelEncoder(nn.Module):
    """Per-pixel perceptron (3x3 conv to P/2, the shallow encoder the ablation found best) and a
    pixel-to-pixel 1x1 conv to P: [B,3,H,W] -> Q [B,P,H,W] at full resolution."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.perceptron = nn.Sequential(nn.Conv2d(3, dim // 2, 3, padding=1), nn.BatchNorm2d(dim // 2), nn.GELU())
        self.pixel_to_pixel = nn.Conv2d(dim // 2, dim, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pixel_to_pixel(self.perceptron(normalize(images[:, :3], IMAGENET_MEAN, IMAGENET_STD)))


class MultiHeadGenerator(nn.Module):
    """N MLP heads map the pooled (batch-wise) ViT information to N semantic embeddings S [N, P]."""

    def __init__(self, in_dim: int, dim: int, n_semantics: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(n_semantics, in_dim, hidden) * in_dim**-0.5)
        self.b1 = nn.Parameter(torch.zeros(n_semantics, hidden))
        self.w2 = nn.Parameter(torch.randn(n_semantics, hidden, dim) * hidden**-0.5)
        self.b2 = nn.Parameter(torch.zeros(n_semantics, dim))
        self.act = nn.GELU()

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """pooled [G, in_dim] (G = 1 batch-wise, or B per image) -> [G, N, P]."""
        h = self.act(torch.einsum("gi,nih->gnh", pooled, self.w1) + self.b1)
        return torch.einsum("gnh,nhp->gnp", h, self.w2) + self.b2


class TokenMatcher(nn.Module):
    """Per-image probabilities that each of the N semantics is present: MLP + BN + GELU + sigmoid."""

    def __init__(self, in_dim: int, n_semantics: int, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.GELU(),
                                 nn.Linear(hidden, n_semantics))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(pooled))


class SemanticGenerator(nn.Module):
    """ViT tokens -> Gamma [B, N, P] = p_b (token matcher) x S (multi-head generator)."""

    def __init__(self, vit: nn.Module, dim: int, n_semantics: int, hidden: int, batch_wise: bool = True,
                 token_matcher: bool = True) -> None:
        super().__init__()
        self.vit = vit
        self.generator = MultiHeadGenerator(vit.dim, dim, n_semantics, hidden)
        self.matcher = TokenMatcher(vit.dim, n_semantics, hidden) if token_matcher else None
        self.batch_wise = batch_wise

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (S [G, N, P] semantic embeddings, Gamma [B, N, P] per-image semantic embeddings)."""
        pooled = self.vit(images).mean(dim=1)  # [B, D_vit]: merge all patch tokens of an image
        semantics = self.generator(pooled.mean(dim=0, keepdim=True) if self.batch_wise else pooled)
        gamma = semantics.expand(images.shape[0], -1, -1)
        if self.matcher is not None:
            gamma = self.matcher(pooled)[..., None] * gamma
        return semantics, gamma


class ReconstructionDecoder(nn.Module):
    """The consistency sustainer's shared shallow 1x1-conv network: [B,P,H,W] -> image [B,3,H,W]."""

    def __init__(self, dim: int, hidden: int = 0) -> None:
        super().__init__()
        self.net = (nn.Conv2d(dim, 3, 1) if hidden <= 0 else
                    nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, 3, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
