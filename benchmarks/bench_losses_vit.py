"""STEGO / HP / PPAP losses: one forward + backward at the paper batch size (time and peak memory).

Feature tensors are given directly (no backbone): 64 images, a 28x28 grid, D = 384 (ViT-S/8 at 224).
Peak memory is torch.cuda.max_memory_allocated on CUDA; on CPU it is the growth of the peak resident set
(VmHWM) of a fresh interpreter running one forward + backward (torch's CPU allocator is invisible to
tracemalloc), with glibc's mmap threshold fixed at 128 KiB so freed blocks leave the resident set.

Targets: PPAP's extra memory is O(anchors x N) (its proxy is M @ F, no [anchors, N, D] tensor);
HP's local term is one batched matmul, with no per-image [784, 784, dim] temporary.

    pytest benchmarks/bench_losses_vit.py --benchmark-enable -s
    USS_BENCH_HP_BATCH=64 pytest ...   # HP defaults to 8 images on CPU (64 x [784 x 50176] blocks are slow there)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from memory import status_bytes

from uss_bench.methods.hp.loss import hidden_positive_loss, local_mix, neighbourhood_mask
from uss_bench.methods.ppap.loss import Propagation, ppap_loss
from uss_bench.methods.stego.head import SegmentationHead
from uss_bench.methods.stego.loss import PairWeights, correspondence_loss

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
GRID, D = 28, 384
HW = GRID * GRID
BATCH = int(os.environ.get("USS_BENCH_LOSS_BATCH", 64))
HP_BATCH = int(os.environ.get("USS_BENCH_HP_BATCH", 64 if CUDA else 8))
ROUNDS = int(os.environ.get("USS_BENCH_ROUNDS", 3))


def peak_bytes(case: str) -> int:
    """Extra memory of one forward+backward of ``case`` beyond its inputs."""
    make_inputs, step = PEAK_CASES[case]
    if CUDA:
        inputs = make_inputs()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(*inputs)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    # CPU: a fresh interpreter per case (forking a process that already ran OpenMP kernels can hang).
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           # Large blocks go straight to mmap and back on free, so RSS follows live tensors rather than
           # what glibc's heap keeps after frees (a dynamic threshold otherwise inflates the peak).
           "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run([sys.executable, __file__, case], capture_output=True, text=True, env=env, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def _child_peak(case: str) -> int:
    make_inputs, step = PEAK_CASES[case]
    inputs = make_inputs()
    with open("/proc/self/clear_refs", "w") as fh:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        fh.write("5")
    base = status_bytes("VmRSS")
    step(*inputs)
    return max(0, status_bytes("VmHWM") - base)


def randn(*shape, grad=False):
    return torch.randn(*shape, device=DEVICE, requires_grad=grad)


def unit(n, d, grad=False, classes=27, noise=0.7):
    """Unit rows in `classes` clusters (same-cluster cosine ~0.67), so positives exist as in real features."""
    g = torch.Generator(device=DEVICE).manual_seed(n + d)
    centres = F.normalize(torch.randn(classes, d, device=DEVICE, generator=g), dim=1)
    labels = torch.arange(n, device=DEVICE) * 7919 % classes
    x = centres[labels] + noise * torch.randn(n, d, device=DEVICE, generator=g) / d**0.5
    return F.normalize(x, dim=1).requires_grad_(grad)


def _report(line: str) -> None:
    print("\n" + line)
    if os.environ.get("OUT"):  # the device machine's output folder
        with open(os.path.join(os.environ["OUT"], "bench_losses_vit.txt"), "a") as fh:
            fh.write(line + "\n")


# ---- the three losses -------------------------------------------------------------------------
def stego_inputs():
    head = SegmentationHead(D, 70).to(DEVICE)
    return head, randn(BATCH, D, GRID, GRID), randn(BATCH, D, GRID, GRID)


def stego_step(head, feats, feats_pos):
    weights = PairWeights(0.18, 0.12, 0.46, 0.67, 0.25, 0.63)
    out = correspondence_loss(feats, feats_pos, head(feats), head(feats_pos), weights)
    out["loss"].backward()


def hp_inputs():
    n, dim = HP_BATCH * HW, 512
    return (unit(n, dim, True), unit(n, dim, True), unit(n, D), unit(n, dim), unit(2048, D), unit(2048, dim))


def hp_step(z, z_mix, f, s, pool_ag, pool_sp):
    out = hidden_positive_loss(z, z_mix, f, s, pool_ag, pool_sp, lam=0.5, rho=0.02, tau=0.8, patches_per_image=HW)
    out["loss"].backward()


def hp_local_inputs():
    weights = torch.rand(BATCH, HW, HW, device=DEVICE) * neighbourhood_mask(GRID, GRID, DEVICE)
    return randn(BATCH, 512, GRID, GRID, grad=True), weights


def hp_local_step(code, weights):
    local_mix(code, weights).square().mean().backward()


def ppap_inputs():
    n = BATCH * HW
    return unit(n, D, True), unit(n, D)


def ppap_step(z, f):
    p = Propagation(phi0=0.55, psi0=0.20, sigma_pos=3, sigma_amb=3, steps=2)
    ppap_loss(z, f, p, tau=0.8, patches_per_image=HW, patch_split=16)["loss"].backward()


def proxy_inputs():
    torch.manual_seed(0)
    n = BATCH * HW
    return unit(n, D), (torch.rand(49, n, device=DEVICE) < 0.05).float()


def proxy_broadcast(f, mask):
    """PPAP's official proxy for one block: mean over N of the masked [49, N, D] broadcast."""
    return F.normalize((f.unsqueeze(0) * mask.unsqueeze(-1)).mean(dim=1), dim=1)


def proxy_matmul(f, mask):
    return F.normalize(mask @ f, dim=1)


CASES = {
    "stego": (stego_inputs, stego_step, f"B={BATCH}, 28x28, D=384, dim 70, 11x11 samples"),
    "hp": (hp_inputs, hp_step, f"B={HP_BATCH}, N={HP_BATCH * HW}, dim 512, pools 2048, rho 0.02"),
    "hp_local": (hp_local_inputs, hp_local_step, f"B={BATCH}, 28x28, dim 512 (local term alone)"),
    "ppap": (ppap_inputs, ppap_step, f"B={BATCH}, N={BATCH * HW}, D=384, 49 anchors/image, T=2"),
}


PEAK_CASES = {name: (make, step) for name, (make, step, _) in CASES.items()}
PEAK_CASES.update(proxy_broadcast=(proxy_inputs, proxy_broadcast), proxy_matmul=(proxy_inputs, proxy_matmul))


@pytest.mark.parametrize("case", list(CASES))
def test_loss_forward_backward(benchmark, case):
    make_inputs, step, label = CASES[case]
    torch.manual_seed(0)
    peak = peak_bytes(case)
    inputs = make_inputs()

    def run():
        step(*inputs)
        if CUDA:
            torch.cuda.synchronize()

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(peak_mb=round(peak / 2**20, 1), device=str(DEVICE), setting=label)
    _report(f"{case}: {label}; peak extra memory {peak / 2**20:.1f} MiB on {DEVICE}; "
            f"mean {benchmark.stats.stats.mean:.4f} s")
    if case == "ppap":  # O(anchors x N): a [49, N, D] fp32 tensor alone would be 49*N*D*4 bytes
        broadcast = 49 * BATCH * HW * D * 4
        assert peak < broadcast / 4, f"PPAP peak {peak} is not far below one [49, N, D] tensor ({broadcast})"
    if case == "hp_local":  # the official loop keeps B products of [784, 784, 512] fp32 (1.26 GB each)
        assert peak < BATCH * HW * HW * 512 * 4 / 16


def test_official_broadcast_proxy_for_comparison(benchmark):
    """One block of PPAP's official proxy step: the masked [49, N, D] broadcast (what M @ F avoids)."""
    f, mask = proxy_inputs()
    assert torch.allclose(proxy_broadcast(f, mask), proxy_matmul(f, mask), atol=1e-5)
    peak_b, peak_m = peak_bytes("proxy_broadcast"), peak_bytes("proxy_matmul")
    t0 = time.perf_counter()
    proxy_broadcast(f, mask)
    t_b = time.perf_counter() - t0
    benchmark.pedantic(lambda: proxy_matmul(f, mask), rounds=ROUNDS, iterations=1)
    benchmark.extra_info.update(broadcast_peak_mb=round(peak_b / 2**20, 1), matmul_peak_mb=round(peak_m / 2**20, 1))
    _report(f"proxy of one block (49 anchors, N={f.shape[0]}): broadcast {peak_b / 2**20:.0f} MiB in {t_b:.3f} s, "
            f"matmul {peak_m / 2**20:.1f} MiB in {benchmark.stats.stats.mean * 1e3:.2f} ms")


if __name__ == "__main__":  # child process of peak_bytes on CPU
    print(_child_peak(sys.argv[1]))
