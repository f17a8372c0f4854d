"""PPAP's progressive proxy anchor propagation and its contrastive loss (reference §PPAP-d).

For each anchor a (f = normalised frozen, dropped-out DINO features of all N patches):
- M^0_aj = 1[<f_a, f_j> > Phi0];  v^0 = f_a;  Phi = Phi0;  Psi = Psi0.
- for t = 1..T:  v^t = normalise(sum_j M^{t-1}_aj f_j)   (the mean's direction, as M @ F),
  c_aj = <v^t, f_j>,  delta = 1 - cos(v^{t-1}, v^t),  Phi -= delta / sigma_pos,  Psi += delta / sigma_amb,
  M^t_aj = 1[c_aj > Phi].
- Positives P_a = {j != a: M^T_aj}; denominator D_a = (P_a or {j: c_aj < Psi}) minus a: the samples
  in the ambiguous zone Psi <= c <= Phi are left out.
- l_a = -(tau/tau0) mean_{j in P_a} (s_aj - log sum_{k in D_a} e^{s_ak}),  s = z.z/tau.
The proxy is a matrix product of the mask and the features, so no [anchors, N, D] tensor is ever built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class Propagation:
    phi0: float  # initial positiveness criterion (initialcrit_pos)
    psi0: float  # initial ambiguity criterion (initialcrit_amb)
    sigma_pos: float
    sigma_amb: float
    steps: int  # T (prop_iter)


@dataclass
class AnchorSets:
    positives: torch.Tensor  # [n, N] bool, M^T (the anchor itself may be in it)
    negatives: torch.Tensor  # [n, N] bool, c < Psi ("confident negatives")
    proxy_sim: torch.Tensor  # [n, N] c after T steps (the anchor similarity when T = 0)
    phi: torch.Tensor  # [n]
    psi: torch.Tensor  # [n]


@torch.no_grad()
def propagate(f_anchor: torch.Tensor, f_all: torch.Tensor, p: Propagation) -> AnchorSets:
    """Positive and confident-negative sets of anchors f_anchor [n, D] among f_all [N, D] (rows normalised)."""
    sim = f_anchor @ f_all.T
    mask = sim > p.phi0
    proxy_prev = f_anchor
    phi = sim.new_full((f_anchor.shape[0],), p.phi0)
    psi = sim.new_full((f_anchor.shape[0],), p.psi0)
    for _ in range(p.steps):
        proxy = F.normalize(mask.to(f_all.dtype) @ f_all, dim=1)
        sim = proxy @ f_all.T
        delta = 1.0 - F.cosine_similarity(proxy_prev, proxy, dim=1)
        phi = phi - delta / p.sigma_pos
        psi = psi + delta / p.sigma_amb
        mask = sim > phi[:, None]
        proxy_prev = proxy
    return AnchorSets(mask, sim < psi[:, None], sim, phi, psi)


def anchor_loss(
    z_anchor: torch.Tensor, z_all: torch.Tensor, sets: AnchorSets, anchor_index: torch.Tensor,
    tau: float, tau0: float = 0.07,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Mean of l_a over anchors with positives (None if there are none) and the [n] positive counts."""
    n = z_anchor.shape[0]
    not_self = torch.ones_like(sets.positives)
    not_self[torch.arange(n, device=z_all.device), anchor_index] = False
    positives = sets.positives & not_self
    denominator = (positives | sets.negatives) & not_self
    counts = positives.sum(dim=1)
    kept = counts > 0
    if not kept.any():
        return None, counts
    logits = z_anchor[kept] @ z_all.T / tau
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    log_norm = torch.log((logits.exp() * denominator[kept]).sum(dim=1, keepdim=True))
    pos = positives[kept].to(logits.dtype)
    mean_log_prob = (pos * (logits - log_norm)).sum(dim=1) / counts[kept]
    return -(tau / tau0 * mean_log_prob).mean(), counts


def block_terms(
    index: torch.Tensor, z: torch.Tensor, f: torch.Tensor, p: Propagation, tau: float, tau0: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss of the block's anchors or 0, mean positives, mean confident negatives) for anchors ``index``."""
    sets = propagate(f[index], f, p)
    loss, counts = anchor_loss(z[index], z, sets, index, tau, tau0)
    if loss is None:  # the official mean over zero anchors is NaN; such a block adds nothing
        loss = z.sum() * 0.0
    return loss, counts.to(z.dtype).mean(), sets.negatives.sum(dim=1).to(z.dtype).mean()


def ppap_loss(
    z: torch.Tensor, f: torch.Tensor, p: Propagation, tau: float, patches_per_image: int,
    patch_split: int = 16, block_patches: int = 784, tau0: float = 0.07,
    anchors: list[torch.Tensor] | None = None, recompute: bool = True,
) -> dict[str, torch.Tensor]:
    """PPAP's loss over a batch: z [N, Dz] normalised projections, f [N, D] normalised criterion features.

    Rows come in blocks of whole images holding about ``block_patches`` patches (one 28x28 image at
    S/8, four 14x14 images at S/16: the official split = 784); each block draws rows // patch_split
    random anchors (49 per 28x28 image) and contrasts them with all N patches. ``anchors`` (block-local
    indices per block) fixes the draw for tests. ``recompute``: a block's sets and [anchors, N] logits
    are recomputed in the backward pass (activation checkpointing), so memory holds one block.
    """
    n = z.shape[0]
    hw = patches_per_image
    per_block = max(1, block_patches // hw) * hw
    total, pos, neg = z.new_zeros(()), [], []
    starts = list(range(0, n, per_block))
    for bi, start in enumerate(starts):
        rows = min(per_block, n - start)
        local = anchors[bi] if anchors is not None else torch.randperm(rows)[: max(1, rows // patch_split)]
        index = local.to(z.device) + start
        if recompute and z.requires_grad:
            loss, n_pos, n_neg = checkpoint(block_terms, index, z, f, p, tau, tau0, use_reentrant=False)
        else:
            loss, n_pos, n_neg = block_terms(index, z, f, p, tau, tau0)
        total = total + loss
        pos.append(n_pos)
        neg.append(n_neg)
    return {
        "loss": total / len(starts),
        "num_positives": torch.stack(pos).mean().detach(),
        "num_negatives": torch.stack(neg).mean().detach(),
    }
