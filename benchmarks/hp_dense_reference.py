"""HP's hidden-positive loss computed the way the official code stores it, for side-by-side benchmarks.

Written from the description of hynnsk/HP ``loss.py`` SupConLoss, loss_version 1 (reference §HP-d):
per image, [hw, N] similarity and logit blocks; masks as fp16 tensors (positives, task-specific
positives, the rho-subsample, the not-self mask rolled from image to image); every block's autograd
graph stays alive until backward. Similarity products under CUDA autocast when ``amp`` (the official
code wraps each matmul in ``torch.cuda.amp.autocast``); the rest runs in the products' dtype, as there.
Not used by the package: it is the "official" column of benchmarks/bench_hp_loss.py.
"""

from __future__ import annotations

import contextlib

import torch


def _amp(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def official_dense_hp_loss(
    z: torch.Tensor, z_mix: torch.Tensor, f: torch.Tensor, s_ema: torch.Tensor, pool_ag: torch.Tensor,
    pool_sp: torch.Tensor, lam: float, tau: float, hw: int, keep_negatives: torch.Tensor,
    tau0: float = 0.07, amp: bool = False,
) -> torch.Tensor:
    n = z.shape[0]
    half = torch.float16
    device = z.device
    not_self = torch.ones(hw, n, dtype=half, device=device)
    not_self[torch.arange(hw), torch.arange(hw)] = 0
    keep = keep_negatives.to(half)
    with _amp(device, amp):
        r_ag = (f @ pool_ag.T).max(dim=1).values
        r_sp = (s_ema @ pool_sp.T).max(dim=1).values
    total = z.new_zeros(())
    for b in range(n // hw):
        rows = slice(b * hw, (b + 1) * hw)
        with _amp(device, amp):
            sim = f[rows] @ f.T
        # both directions as separate fp16 masks, OR-ed, as the official code builds them
        pos = torch.logical_or((sim > r_ag[rows, None]).to(half), (r_ag[:, None] < sim.T).T.to(half)).to(half)
        denominator = not_self * torch.logical_or(pos, keep).to(half)
        pos = pos * not_self
        with _amp(device, amp):
            sim_sp = s_ema[rows] @ s_ema.T
        pos_sp = torch.logical_or((sim_sp > r_sp[rows, None]).to(half), (r_sp[:, None] < sim_sp.T).T.to(half))
        pos_sp = pos_sp.to(half) * not_self
        kept = torch.where(pos.sum(dim=1) != 0)
        weights = pos[kept] + pos_sp[kept] * lam
        pnm = weights.sum(dim=1).float()
        pnm = pnm / pnm.sum()
        pnm = pnm / pnm.mean()
        for zz in (z, z_mix):
            with _amp(device, amp):
                logits = torch.div(zz[rows] @ zz.T, tau)
            logits = logits - logits.max(dim=1, keepdim=True).values.detach()
            log_prob = logits - torch.log((torch.exp(logits) * denominator).sum(dim=1, keepdim=True))
            mean_log_prob = (weights * log_prob[kept]).sum(dim=1) / weights.sum(dim=1)
            total = total - torch.mean((tau / tau0) * mean_log_prob * pnm)
        not_self = torch.roll(not_self, hw, dims=1)
    return total / (n // hw) / 2
