"""HP's hidden-positive contrastive loss (reference §HP-d; hynnsk/HP loss.py, loss_version 1).

Notation: N patches of the batch; f = normalised frozen (dropped-out) DINO features, s = normalised
EMA-head features, z / z_mix = normalised projections of the code and of the locally mixed code.

- Per-anchor criterion: R_i = max_p <f_i, Pool_ag_p> (similarity to the nearest pool entry), likewise
  R^sp_i with the task-specific pool.
- Positives, symmetrised with OR, never the anchor itself:
  m_ij = 1[<f_i,f_j> > R_i or <f_i,f_j> > R_j];  w_ij = m^ag_ij + lambda(t) m^sp_ij.
- Denominator: task-agnostic positives plus a rho-subsample of everything (one Bernoulli draw per step).
- l_i = -(tau/tau0) sum_j w_ij (s_ij - log sum_{k in D_i} e^{s_ik}) / sum_j w_ij over anchors with
  task-agnostic positives, re-weighted by pnm_i = W_i / mean W; the same for z_mix (local positives).
- Anchors are processed one image at a time against all N patches: [hw, N] blocks, never [N, N].
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def nearest_pool_similarity(x: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """R_i = max_p <x_i, pool_p> for normalised rows x [N, D] and pool [P, D]."""
    return (x @ pool.T).max(dim=1).values


def symmetric_positives(sim: torch.Tensor, r_rows: torch.Tensor, r_cols: torch.Tensor) -> torch.Tensor:
    """1[sim_ij > R_i or sim_ij > R_j] for a block sim [n, N] with row criteria [n] and column criteria [N]."""
    return (sim > r_rows[:, None]) | (sim > r_cols[None, :])


def supcon_rows(
    z_rows: torch.Tensor, z_all: torch.Tensor, weights: torch.Tensor, denominator: torch.Tensor,
    tau: float, tau0: float, pnm: torch.Tensor | float,
) -> torch.Tensor:
    """-(tau/tau0) mean_i pnm_i sum_j w_ij log softmax_{D_i}(z_i.z_j/tau)_j / sum_j w_ij."""
    logits = z_rows @ z_all.T / tau
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()  # stability only; cancels
    log_norm = torch.log((logits.exp() * denominator).sum(dim=1, keepdim=True))
    mean_log_prob = (weights * (logits - log_norm)).sum(dim=1) / weights.sum(dim=1)
    return -((tau / tau0) * mean_log_prob * pnm).mean()


def image_terms(
    b: int, z: torch.Tensor, z_mix: torch.Tensor, f: torch.Tensor, s_ema: torch.Tensor, r_ag: torch.Tensor,
    r_sp: torch.Tensor, keep_negatives: torch.Tensor, hw: int, lam: float, tau: float, tau0: float, reweight: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L_GHP, L_LHP, mean positive count) for the hw anchors of image b against all N patches."""
    n = z.shape[0]
    rows = slice(b * hw, (b + 1) * hw)
    with torch.no_grad():
        not_self = torch.ones(hw, n, dtype=torch.bool, device=z.device)
        not_self[torch.arange(hw), torch.arange(b * hw, (b + 1) * hw)] = False
        m_ag = symmetric_positives(f[rows] @ f.T, r_ag[rows], r_ag)
        denominator = (m_ag | keep_negatives) & not_self
        m_ag &= not_self
        m_sp = symmetric_positives(s_ema[rows] @ s_ema.T, r_sp[rows], r_sp) & not_self
        kept = m_ag.any(dim=1)
        n_positives = m_ag.sum() / hw
    if not kept.any():  # the official mean over zero anchors is NaN; an image without anchors adds nothing
        zero = z.sum() * 0.0
        return zero, zero, n_positives
    with torch.no_grad():
        weights = m_ag[kept].to(z.dtype) + lam * m_sp[kept].to(z.dtype)
        total = weights.sum(dim=1)
        pnm = total / total.mean() if reweight else 1.0
        denominator = denominator[kept].to(z.dtype)
    ghp = supcon_rows(z[rows][kept], z, weights, denominator, tau, tau0, pnm)
    lhp = supcon_rows(z_mix[rows][kept], z_mix, weights, denominator, tau, tau0, pnm)
    return ghp, lhp, n_positives


def hidden_positive_loss(
    z: torch.Tensor, z_mix: torch.Tensor, f: torch.Tensor, s_ema: torch.Tensor,
    pool_ag: torch.Tensor, pool_sp: torch.Tensor, lam: float, rho: float, tau: float,
    patches_per_image: int, tau0: float = 0.07, reweight: bool = True,
    keep_negatives: torch.Tensor | None = None, recompute: bool = True,
) -> dict[str, torch.Tensor]:
    """L_sup = sum over images of (L_GHP + L_LHP) / (2 * images).

    All inputs are L2-normalised rows: z, z_mix [N, dim]; f [N, D] and s_ema [N, dim] (detached);
    pools [P, D] / [P, dim]. ``keep_negatives`` [hw, N] is the rho-subsample (drawn here if None).
    ``recompute``: each image's masks and [hw, N] logits are recomputed in the backward pass instead
    of kept (activation checkpointing; same numbers), so memory holds one image's block, not all.
    """
    n = z.shape[0]
    hw = patches_per_image
    if n % hw:
        raise ValueError(f"{n} patches are not a whole number of {hw}-patch images")
    with torch.no_grad():
        r_ag = nearest_pool_similarity(f, pool_ag)
        r_sp = nearest_pool_similarity(s_ema, pool_sp)
        if keep_negatives is None:
            keep_negatives = torch.rand(hw, n, device=z.device) < rho
    blocks = n // hw
    ghp_total, lhp_total, n_positives = z.new_zeros(()), z.new_zeros(()), z.new_zeros(())
    grad = z.requires_grad or z_mix.requires_grad
    for b in range(blocks):
        args = (b, z, z_mix, f, s_ema, r_ag, r_sp, keep_negatives, hw, lam, tau, tau0, reweight)
        if recompute and grad:
            ghp, lhp, pos = checkpoint(image_terms, *args, use_reentrant=False)
        else:
            ghp, lhp, pos = image_terms(*args)
        ghp_total, lhp_total, n_positives = ghp_total + ghp, lhp_total + lhp, n_positives + pos
    return {
        "loss": (ghp_total + lhp_total) / (2 * blocks),
        "ghp": ghp_total.detach() / blocks,
        "lhp": lhp_total.detach() / blocks,
        "positives": n_positives / blocks,
    }


def neighbourhood_mask(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """[hw, hw] bool: patch j is in the 3x3 neighbourhood (self included) of patch i, on an h x w grid."""
    yy, xx = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    yy, xx = yy.flatten(), xx.flatten()
    return ((yy[:, None] - yy[None, :]).abs() <= 1) & ((xx[:, None] - xx[None, :]).abs() <= 1)


@torch.no_grad()
def local_attention(attn_logits: torch.Tensor, h: int, w: int, sigma: float = 28.0, prefix: int = 1) -> torch.Tensor:
    """HP's neighbour weights a_ij [B, hw, hw] from the last block's pre-softmax attention.

    Heads averaged, each row clamped to its own [10%, 90%] quantiles, softmax over keys, times sigma,
    entries below the row mean zeroed, then restricted to the 3x3 neighbourhood.
    """
    a = attn_logits[:, :, prefix:, prefix:].float().mean(dim=1)
    lo = torch.quantile(a, 0.1, dim=2, keepdim=True)
    hi = torch.quantile(a, 0.9, dim=2, keepdim=True)
    a = torch.maximum(torch.minimum(a, hi), lo).softmax(dim=-1) * sigma
    a = torch.where(a < a.mean(dim=2, keepdim=True), torch.zeros_like(a), a)
    return a * neighbourhood_mask(h, w, a.device)


def local_mix(code: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """s_mix(i) = sum_{j in N(i)} a_ij s(j) / |N(i)|; gradient flows to the neighbours s(j).

    code [B, C, h, w], weights [B, hw, hw] (zero outside the 3x3 neighbourhood) -> [B, C, h, w].
    One batched matmul instead of the official per-image [hw, hw, C] broadcast.
    """
    b, c, h, w = code.shape
    counts = neighbourhood_mask(h, w, code.device).sum(dim=1).to(code.dtype)
    flat = code.flatten(2).transpose(1, 2)  # [B, hw, C]
    mixed = torch.bmm(weights.to(code.dtype), flat) / counts[None, :, None]
    return mixed.transpose(1, 2).reshape(b, c, h, w)


def photometric_consistency(z: torch.Tensor, z_aug: torch.Tensor) -> torch.Tensor:
    """mean_p ||z_p - z_aug,p||_2 (torch's PairwiseDistance, eps 1e-6, as the official code)."""
    return torch.nn.functional.pairwise_distance(z, z_aug).mean()
