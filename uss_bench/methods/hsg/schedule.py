"""HSG's learning-rate policies (official ``hsg/utils/general/train.py``), as factors of the base lr.

``step``: warm-up over the first ``warmup`` iterations from base/10 linearly towards base, then x0.1
at 32 %, 56 % and 75 % of the iterations. ``poly``: (1 - t/T)^0.9, during warm-up the smaller of the
warm-up ramp and the poly value. ``constant``: 1 (ours, for short CPU runs).
"""

from __future__ import annotations

DECAYS = (0.32, 0.56, 0.75)


def warmup_ramp(step: int, warmup: int) -> float:
    alpha = step / warmup
    return 0.1 * (1 - alpha) + alpha


def step_factor(step: int, total: int, warmup: int = 100, decays: tuple[float, ...] = DECAYS) -> float:
    if step < warmup:
        return warmup_ramp(step, warmup)
    return 0.1 ** sum(step >= int(d * total) for d in decays)


def poly_factor(step: int, total: int, warmup: int = 100, power: float = 0.9) -> float:
    poly = (1 - step / total) ** power
    return min(warmup_ramp(step, warmup), poly) if step < warmup else poly


def lr_factor(policy: str, step: int, total: int, warmup: int) -> float:
    if policy == "step":
        return step_factor(step, total, warmup)
    if policy == "poly":
        return poly_factor(step, total, warmup)
    if policy == "constant":
        return 1.0
    raise ValueError(f"hsg: lr_schedule.policy must be step, poly or constant, got {policy!r}")
