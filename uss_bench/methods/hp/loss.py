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

import math

import torch


def nearest_pool_similarity(x: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """R_i = max_p <x_i, pool_p> for normalised rows x [N, D] and pool [P, D]."""
    return (x @ pool.T).max(dim=1).values


def symmetric_positives(sim: torch.Tensor, r_rows: torch.Tensor, r_cols: torch.Tensor) -> torch.Tensor:
    """1[sim_ij > R_i or sim_ij > R_j] for a block sim [n, N] with row criteria [n] and column criteria [N]."""
    return (sim > r_rows[:, None]) | (sim > r_cols[None, :])


# ---- masks kept as bits ---------------------------------------------------------------------------
_BIT_VALUES = (1, 2, 4, 8, 16, 32, 64, 128)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """[n, N] bool -> [n, ceil(N / 8)] uint8, bit k of byte c = mask[:, 8c + k]."""
    n, cols = mask.shape
    pad = (-cols) % 8
    if pad:
        mask = torch.cat([mask, mask.new_zeros(n, pad)], dim=1)
    bits = torch.tensor(_BIT_VALUES, dtype=torch.uint8, device=mask.device)
    return (mask.view(n, -1, 8).to(torch.uint8) * bits).sum(dim=2, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, cols: int) -> torch.Tensor:
    """Inverse of ``pack_bits``: [n, ceil(N / 8)] uint8 -> [n, N] bool."""
    bits = torch.tensor(_BIT_VALUES, dtype=torch.uint8, device=packed.device)
    return (packed[:, :, None] & bits).ne_(0).view(torch.bool).view(packed.shape[0], -1)[:, :cols]


def _matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the similarity products run in: autocast's (fp16 under the official AMP) or the input's."""
    kind = x.device.type
    if kind in ("cuda", "cpu") and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return x.dtype


def _stats_dtype(x: torch.Tensor) -> torch.dtype:
    """Softmax statistics accumulate in fp32 at least (fp64 stays fp64)."""
    return torch.promote_types(x.dtype, torch.float32)


def _shifted_logits(rows: torch.Tensor, cols: torch.Tensor, tau: float, shift: float, dtype: torch.dtype
                    ) -> torch.Tensor:
    """z_rows z_cols^T / tau - shift in ``dtype``; the product runs in the operands' dtype (fp16 under AMP)."""
    if rows.dtype == dtype:  # one fused BLAS call
        return torch.addmm(rows.new_full((1,), -shift), rows, cols.T, alpha=1.0 / tau)
    return (rows @ cols.T).to(dtype).mul_(1.0 / tau).sub_(shift)


def _row_chunks(hw: int, n: int, device: torch.device) -> list[tuple[int, int]]:
    """Split an image's hw anchors into equal row chunks of at most ~2^23 (CPU) / 2^25 (GPU) block entries."""
    budget = 2**25 if device.type == "cuda" else 2**23
    count = max(1, math.ceil(hw * n / budget))
    size = math.ceil(hw / count)
    return [(r, min(hw, r + size)) for r in range(0, hw, size)]


def _without_self(mask: torch.Tensor, first_col: int) -> torch.Tensor:
    """Clear entry (i, first_col + i) of each row: the anchor itself."""
    idx = torch.arange(mask.shape[0], device=mask.device)
    mask[idx, idx + first_col] = False
    return mask


def _weights(m_ag: torch.Tensor, m_sp: torch.Tensor | None, lam: float, dtype: torch.dtype) -> torch.Tensor:
    """w = m^ag + lambda m^sp as floats, filled in place (no second float block)."""
    weights = torch.where(m_ag, 1.0, 0.0).to(dtype)
    if m_sp is not None:
        weights.masked_fill_(m_sp & m_ag, 1.0 + lam).masked_fill_(m_sp & ~m_ag, lam)
    return weights


class _ImageState:
    """What one image's anchors keep between forward and backward: bits and row statistics.

    m^ag and m^sp (self excluded) as bits; per anchor 1 / W_i, the coefficient c_i = (tau/tau0) pnm_i /
    |kept| (0 for anchors without positives) and, per term, log sum_{k in D_i} e^{s_ik - shift}.
    """

    def __init__(self, b: int, chunks: list[tuple[int, int]]) -> None:
        self.b, self.chunks = b, chunks
        self.ag: list[torch.Tensor] = []
        self.sp: list[torch.Tensor | None] = []
        self.inv_weight_sum: list[torch.Tensor] = []
        self.log_norms: list[list[torch.Tensor]] = [[], []]
        self.logits: list[list[torch.Tensor | None]] = [[], []]
        self.coef = torch.empty(0)

    def finish(self, weight_sum: torch.Tensor, kept: torch.Tensor, tau: float, tau0: float, reweight: bool) -> None:
        n_kept = int(kept.sum())
        self.any_kept = n_kept > 0
        if self.any_kept:
            pnm = weight_sum / weight_sum[kept].mean() if reweight else torch.ones_like(weight_sum)
            self.coef = torch.where(kept, (tau / tau0) * pnm / n_kept, torch.zeros_like(weight_sum))
        else:
            self.coef = torch.zeros_like(weight_sum)
        for t in range(2):  # an empty D_i only occurs where c_i = 0; keep its normaliser finite
            self.log_norms[t] = [torch.where(kept[r0:r1], x, 0.0) for x, (r0, r1) in zip(self.log_norms[t],
                                                                                          self.chunks)]


class _SupConBlocks(torch.autograd.Function):
    """Sum over images of mean_{i kept} pnm_i l_i, for z (GHP) and z_mix (LHP), with a hand-written backward.

    Forward builds each image's masks, keeps them as bits with row statistics (weight sums, pnm, the
    log-normaliser per anchor) and drops its [hw, N] blocks; backward recomputes one image's logits at a
    time: dL/ds_ij = c_i (P_ij - w_ij / W_i), P the softmax over D_i, c_i = (tau/tau0) pnm_i / |kept|.
    Logits are shifted by a constant bound on |s| (max ||z||^2 / tau) instead of the row maximum: the
    shift cancels in every term, as the official max does, and saves a pass over the block. Rows are
    processed in chunks so that the transient blocks stay small.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, z_mix: torch.Tensor, f: torch.Tensor, s_ema: torch.Tensor,
                r_ag: torch.Tensor, r_sp: torch.Tensor, keep_negatives: torch.Tensor, lam: float, tau: float,
                tau0: float, reweight: bool, keep_logits: bool) -> tuple[torch.Tensor, ...]:
        dtype = _stats_dtype(z)
        mm = _matmul_dtype(z)
        hw, n = keep_negatives.shape
        operands = (z.detach().to(mm), z_mix.detach().to(mm))  # cast once, not per image
        shifts = [float(x.detach().square().sum(dim=1).max()) / tau for x in (z, z_mix)]
        if max(shifts) > 40.0:  # exp(-2 * shift) would underflow fp32: shift by the row maximum instead
            shifts = [None, None]
        f_mm, s_mm = f.to(mm), s_ema.to(mm)
        chunks = _row_chunks(hw, n, z.device)
        totals = [z.new_zeros((), dtype=dtype), z.new_zeros((), dtype=dtype)]
        n_positives = z.new_zeros((), dtype=dtype)
        states: list[_ImageState] = []
        with torch.autocast(z.device.type, enabled=False):
            for b in range(n // hw):
                state = _ImageState(b, chunks)
                weight_sums, kept, positive_means = [], [], [[], []]
                for r0, r1 in chunks:
                    rows = slice(b * hw + r0, b * hw + r1)
                    m_ag = _without_self(symmetric_positives(f_mm[rows] @ f_mm.T, r_ag[rows], r_ag), rows.start)
                    m_sp = None
                    if lam != 0:  # lambda = 0 (warm-up): the task-specific positives weigh nothing
                        m_sp = _without_self(symmetric_positives(s_mm[rows] @ s_mm.T, r_sp[rows], r_sp), rows.start)
                    count = m_ag.sum(dim=1, dtype=dtype)
                    n_positives += count.sum() / hw
                    weights = _weights(m_ag, m_sp, lam, dtype)
                    weight_sum = weights.sum(dim=1)
                    inv_weight_sum = 1.0 / weight_sum.clamp_min(torch.finfo(dtype).tiny)  # W = 0 -> c = 0
                    outside = ~_without_self(m_ag | keep_negatives[r0:r1], rows.start)  # not in D_i
                    state.ag.append(pack_bits(m_ag))
                    state.sp.append(pack_bits(m_sp) if m_sp is not None else None)
                    state.inv_weight_sum.append(inv_weight_sum)
                    weight_sums.append(weight_sum)
                    kept.append(count > 0)
                    del m_ag, m_sp
                    for t, zz in enumerate(operands):
                        s = _shifted_logits(zz[rows], zz, tau, shifts[t] or 0.0, dtype)
                        if shifts[t] is None:
                            s.sub_(s.max(dim=1, keepdim=True).values)
                        positive_means[t].append(torch.linalg.vecdot(s, weights) * inv_weight_sum)
                        state.logits[t].append(s.clone() if keep_logits else None)
                        state.log_norms[t].append(s.exp_().masked_fill_(outside, 0.0).sum(dim=1).log_())
                state.finish(torch.cat(weight_sums), torch.cat(kept), tau, tau0, reweight)
                for t in range(2):
                    log_norm, positive_mean = torch.cat(state.log_norms[t]), torch.cat(positive_means[t])
                    totals[t] += (state.coef * (log_norm - positive_mean)).sum()
                states.append(state)
        ctx.save_for_backward(z, z_mix)
        ctx.states, ctx.keep_negatives, ctx.tau, ctx.mm, ctx.shifts = states, keep_negatives, tau, mm, shifts
        ctx.lam = lam
        ctx.mark_non_differentiable(n_positives)
        return totals[0].to(z.dtype), totals[1].to(z.dtype), n_positives

    @staticmethod
    def backward(ctx, grad_ghp: torch.Tensor, grad_lhp: torch.Tensor, _unused: torch.Tensor):
        z, z_mix = ctx.saved_tensors
        dtype = _stats_dtype(z)
        hw, n = ctx.keep_negatives.shape
        grads = [torch.zeros_like(z, dtype=dtype), torch.zeros_like(z_mix, dtype=dtype)]
        outer = (float(grad_ghp) / ctx.tau, float(grad_lhp) / ctx.tau)
        operands = (z.to(ctx.mm), z_mix.to(ctx.mm))
        with torch.autocast(z.device.type, enabled=False):
            for state in ctx.states:
                if not state.any_kept:
                    continue
                for k, (r0, r1) in enumerate(state.chunks):
                    rows = slice(state.b * hw + r0, state.b * hw + r1)
                    m_ag = unpack_bits(state.ag[k], n)
                    m_sp = unpack_bits(state.sp[k], n) if state.sp[k] is not None else None
                    coef = state.coef[r0:r1, None]
                    # j not in D_i, and c_i w_ij / W_i: shared by both terms
                    outside = ~_without_self(m_ag | ctx.keep_negatives[r0:r1], rows.start)
                    target = _weights(m_ag, m_sp, ctx.lam, dtype).mul_(coef * state.inv_weight_sum[k][:, None])
                    del m_ag, m_sp
                    for t, zz in enumerate(operands):
                        if not ctx.needs_input_grad[t]:
                            continue
                        s = state.logits[t][k]
                        if s is None:
                            s = _shifted_logits(zz[rows], zz, ctx.tau, ctx.shifts[t] or 0.0, dtype)
                            if ctx.shifts[t] is None:
                                s.sub_(s.max(dim=1, keepdim=True).values)
                        # g_ij = c_i (P_ij - w_ij / W_i): the gradient w.r.t. s_ij, times dL/dtotal / tau below
                        g = s.sub_(state.log_norms[t][k][:, None]).exp_().masked_fill_(outside, 0.0)
                        g = g.mul_(coef).sub_(target).to(ctx.mm)
                        if ctx.mm == dtype:  # accumulate in place, no [N, dim] temporary
                            grads[t][rows].addmm_(g, zz, alpha=outer[t])
                            grads[t].addmm_(g.T, zz[rows], alpha=outer[t])
                        else:
                            grads[t][rows] += (g @ zz).to(dtype).mul_(outer[t])
                            grads[t] += (g.T @ zz[rows]).to(dtype).mul_(outer[t])
        return (grads[0].to(z.dtype), grads[1].to(z_mix.dtype)) + (None,) * 10


def hidden_positive_loss(
    z: torch.Tensor, z_mix: torch.Tensor, f: torch.Tensor, s_ema: torch.Tensor,
    pool_ag: torch.Tensor, pool_sp: torch.Tensor, lam: float, rho: float, tau: float,
    patches_per_image: int, tau0: float = 0.07, reweight: bool = True,
    keep_negatives: torch.Tensor | None = None, recompute: bool = True,
) -> dict[str, torch.Tensor]:
    """L_sup = sum over images of (L_GHP + L_LHP) / (2 * images).

    All inputs are L2-normalised rows: z, z_mix [N, dim]; f [N, D] and s_ema [N, dim] (detached);
    pools [P, D] / [P, dim]. ``keep_negatives`` [hw, N] is the rho-subsample (drawn here if None).
    Memory: each image's masks are kept as bits with per-anchor statistics; ``recompute`` (default)
    recomputes an image's [hw, N] logits in the backward pass instead of keeping them (same numbers).
    Under CUDA autocast the similarity products run in fp16, as the official code's; the softmax
    statistics and the gradient accumulate in fp32.
    """
    n = z.shape[0]
    hw = patches_per_image
    if n % hw:
        raise ValueError(f"{n} patches are not a whole number of {hw}-patch images")
    blocks = n // hw
    with torch.no_grad():
        r_ag = nearest_pool_similarity(f, pool_ag)  # under CUDA autocast fp16, as the official criteria
        r_sp = nearest_pool_similarity(s_ema, pool_sp)
        if keep_negatives is None:
            keep_negatives = torch.rand(hw, n, device=z.device) < rho
    ghp, lhp, n_positives = _SupConBlocks.apply(z, z_mix, f.detach(), s_ema.detach(), r_ag, r_sp, keep_negatives,
                                                lam, tau, tau0, reweight, not recompute)
    return {
        "loss": (ghp + lhp) / (2 * blocks),
        "ghp": ghp.detach() / blocks,
        "lhp": lhp.detach() / blocks,
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
