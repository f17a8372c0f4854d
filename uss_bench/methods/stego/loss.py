"""STEGO's contrastive correlation (correspondence distillation) loss (reference §1d).

For a pair of images (x, y), sampled at 11x11 random points each:
    F_hwij = <f_x(h,w), f_y(i,j)>,   S_hwij = <s_x(h,w), s_y(i,j)>   (cosine, frozen features f, code s)
    F is centred per point (no gradient); the loss is  -max(S, 0) * (F - b)  averaged over all entries.
The step loss mixes three pair types with their own shift b and weight lambda: self (x, x), kNN
(x, a neighbour of x) and random (x, x_pi) over 5 permutations without fixed points.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

CENTERINGS = ("official", "paper", "none")


@dataclass(frozen=True)
class PairWeights:
    """Shift b and weight lambda per pair type (STEGO's *_shift and *_weight config keys)."""

    self_shift: float
    knn_shift: float
    rand_shift: float
    self_weight: float
    knn_weight: float
    rand_weight: float


def normalize(t: torch.Tensor) -> torch.Tensor:
    return F.normalize(t, dim=1, eps=1e-10)


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[B,C,h,w] x [B,C,i,j] -> [B,h,w,i,j] cosine similarities."""
    return torch.einsum("nchw,ncij->nhwij", normalize(a), normalize(b))


def center(fd: torch.Tensor, mode: str = "official") -> torch.Tensor:
    """Spatial centring of the feature correlation.

    official: subtract each point's mean over (i, j), then restore the global mean (STEGO's code);
    paper: subtract each point's mean only (the paper's F^SC); none: leave F as it is.
    """
    if mode == "none":
        return fd
    if mode not in CENTERINGS:
        raise ValueError(f"centering must be one of {CENTERINGS}, got {mode!r}")
    global_mean = fd.mean()
    centred = fd - fd.mean(dim=(3, 4), keepdim=True)
    if mode == "paper":
        return centred
    return centred - centred.mean() + global_mean


def pair_loss(
    f1: torch.Tensor, f2: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, shift: float,
    centering: str = "official", zero_clamp: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-entry loss -clamp(S) * (F - b) [B,h,w,i,j] and the code correlation S."""
    with torch.no_grad():  # the features are frozen: F needs no graph
        fd = center(correlation(f1, f2), centering)
    cd = correlation(c1, c2)
    clamped = cd.clamp(min=0.0) if zero_clamp else cd
    return -clamped * (fd - shift), cd


def sample(t: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of t [B,C,H,W] at coords [B,s,s,2] in [-1,1] -> [B,C,s,s] (border padding)."""
    return F.grid_sample(t, coords.permute(0, 2, 1, 3), padding_mode="border", align_corners=True)


def derangement(n: int, device: torch.device | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """STEGO's super_perm: a random permutation whose fixed points are bumped by one (mod n).

    No image is paired with itself; as in the official code, two bumped entries may then coincide.
    """
    perm = torch.randperm(n, generator=generator).to(device)
    perm[perm == torch.arange(n, device=device)] += 1
    return perm % n


def correspondence_loss(
    feats: torch.Tensor, feats_pos: torch.Tensor, code: torch.Tensor, code_pos: torch.Tensor,
    weights: PairWeights, feature_samples: int = 11, neg_samples: int = 5, centering: str = "official",
    zero_clamp: bool = True,
) -> dict[str, torch.Tensor]:
    """The step's correspondence loss and its three parts.

    feats/code: the anchor images' (dropped-out) features and code; feats_pos/code_pos: their kNN
    images'. The anchor uses coords1; the kNN and random images use coords2 (as the official code).
    """
    b = feats.shape[0]
    shape = (b, feature_samples, feature_samples, 2)
    coords1 = torch.rand(shape, device=feats.device) * 2 - 1
    coords2 = torch.rand(shape, device=feats.device) * 2 - 1
    f, c = sample(feats, coords1), sample(code, coords1)
    f_pos, c_pos = sample(feats_pos, coords2), sample(code_pos, coords2)
    self_loss, _ = pair_loss(f, f, c, c, weights.self_shift, centering, zero_clamp)
    knn_loss, _ = pair_loss(f, f_pos, c, c_pos, weights.knn_shift, centering, zero_clamp)
    rand_losses = []
    for _ in range(neg_samples):
        perm = derangement(b, feats.device)
        f_neg, c_neg = sample(feats[perm], coords2), sample(code[perm], coords2)
        rand_losses.append(pair_loss(f, f_neg, c, c_neg, weights.rand_shift, centering, zero_clamp)[0])
    parts = {
        "self": self_loss.mean(),
        "knn": knn_loss.mean(),
        "rand": torch.cat(rand_losses).mean(),
    }
    total = (weights.self_weight * parts["self"] + weights.knn_weight * parts["knn"]
             + weights.rand_weight * parts["rand"])
    return {"loss": total, **parts}
