"""Where one training step's time goes, per method, with torch.profiler.

Each method is built as a run builds it (card + published config, random-init backbone) and stepped
the way uss_bench/train.py steps it, with each phase labelled: data (loader + collate of uint8
images), h2d (copy to the device, uint8, pinned memory on CUDA), method forward (``training_step``,
under fp16 autocast when the card's amp is on and the device is CUDA), of which the frozen backbone's
own forward is labelled ``backbone``; backward; optimiser (clipping + steps); probes (the cluster and
linear probes on the handed-over ``code``). Then, beside it, the backbone forward alone at the same
batch (the reference of issue 15's targets: dino's step <= 2 x its backbone forward; the others'
steps <= 2 x (backbone forward + method loss)).

    PYTHONPATH=$PWD python benchmarks/profile_step.py                     # all methods
    PYTHONPATH=$PWD python benchmarks/profile_step.py dino,hp --batch 64 --res 224
On CPU the default is batch 2 at 112 px (paper batch 64 at 224 px takes minutes per step there).
With $OUT set (the device machine), the table is also written to $OUT/profile_step.txt.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from contextlib import contextmanager, nullcontext

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from uss_bench.config import resolve
from uss_bench.data.base import collate
from uss_bench.data.transforms import to_unit_float
from uss_bench.eval.probes import Probes
from uss_bench.pipeline import RunEnv, build_method, default_backbone
from uss_bench.registry import METHODS
from uss_bench.spec import RunSpec
from uss_bench.train import TrainSettings, build_optimizers, epoch_pass_loader

CUDA = torch.cuda.is_available()
PHASES = ("data", "h2d", "method_forward", "backbone", "backward", "optimiser", "probes")


class SyntheticImages(torch.utils.data.Dataset):
    """uint8 images and int64 labels, as the real loaders hand them to the collate function."""

    def __init__(self, n: int, res: int, classes: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, 3, res, res), generator=g, dtype=torch.uint8)
        self.labels = torch.randint(0, classes, (n, res, res), generator=g)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "id": str(i), "index": i}


@contextmanager
def _labelled_backbone(method):
    """Label the frozen backbone's forward calls inside training_step as ``backbone``."""
    backbone = getattr(method, "backbone", None)
    if backbone is None:
        yield
        return
    original = backbone.forward

    def forward(*args, **kwargs):
        with record_function("backbone"):
            return original(*args, **kwargs)

    backbone.forward = forward
    try:
        yield
    finally:
        del backbone.forward


def profile_method(name: str, batch: int, res: int, steps: int, workers: int, device: torch.device) -> dict:
    torch.manual_seed(0)
    backbone_name = default_backbone(name)
    config = resolve(RunSpec(name, "synthetic", backbone_name, random_init=True,
                             overrides={"train.batch_size": batch, "train.train_res": res}))
    classes = 27
    method = build_method(config, RunEnv(device=str(device)), classes, 1000).to(device)
    probes = Probes(method.embed_dim, classes).to(device)
    settings = TrainSettings(steps=steps, batch_size=batch, linear_lr=1e-3, cluster_lr=1e-3)
    optimizers = build_optimizers(method, probes, settings)
    use_amp = bool(config.train.get("amp")) and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    data = SyntheticImages(batch * (steps + 2), res, classes)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, num_workers=workers, collate_fn=collate,
                                         pin_memory=device.type == "cuda")
    method.train()
    method.on_train_start(data)
    # as train() does at each epoch start (PiCIE's k-means and pseudo-labels); not part of the timed steps
    method.on_epoch_start(0, lambda: epoch_pass_loader(data, batch, workers, 0, 0))
    autocast = torch.autocast(device.type, dtype=torch.float16) if use_amp else nullcontext()
    clip = config.train.get("clip_grad_norm")
    clip_params = [p for g in method.param_groups() if g.get("clip", True) for p in g["params"] if p.requires_grad]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step(it, k: int) -> None:
        with record_function("data"):
            batch_cpu = next(it)
        with record_function("h2d"):
            images = to_unit_float(batch_cpu["image"].to(device, non_blocking=True))
            labels = batch_cpu["label"].to(device, non_blocking=True)
            sync()
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        with record_function("method_forward"), autocast, _labelled_backbone(method):
            out = method.training_step({"image": images, "id": batch_cpu["id"], "index": batch_cpu["index"]}, k)
            sync()
        loss = out.get("loss")
        with record_function("backward"):
            if loss is not None and loss.requires_grad:
                scaler.scale(loss).backward()
            sync()
        with record_function("optimiser"):
            if loss is not None and loss.requires_grad:
                if clip:
                    for n_, opt in optimizers.items():
                        if not n_.endswith("_probe"):
                            scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(clip_params, clip)
                for n_, opt in optimizers.items():
                    if not n_.endswith("_probe"):
                        scaler.step(opt)
                scaler.update()
            sync()
        with record_function("probes"):
            code = out.get("code")
            if code is None:
                with torch.no_grad():
                    code = method.embed(images)
            code = code.detach().float()
            (probes.cluster.loss(code) + probes.linear.loss(code, labels)).backward()
            optimizers["cluster_probe"].step()
            optimizers["linear_probe"].step()
            sync()

    it = iter(loader)
    step(it, 1)  # warm-up (allocator, autotuning); k = 1: no pool renewal etc. at step 0
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for k in range(steps):
            step(it, 2 + k)
    wall = (time.perf_counter() - start) / steps
    phases = {}
    for event in prof.key_averages():
        if event.key in PHASES:
            phases[event.key] = event.cpu_time_total / 1e6 / steps  # phases sync, so CPU wall covers the GPU
    # the backbone forward alone, same batch and autocast, for the target's reference
    backbone_s = float("nan")
    backbone = getattr(method, "backbone", None)
    if backbone is not None:
        images = torch.rand(batch, 3, res, res, device=device)
        with torch.no_grad(), autocast:
            backbone(images)
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                backbone(images)
            sync()
        backbone_s = (time.perf_counter() - t0) / steps
    return {"method": name, "backbone": backbone_name, "batch": batch, "res": res, "amp": use_amp,
            "step_s": wall, "phases": phases, "backbone_forward_s": backbone_s}


def machine() -> str:
    if CUDA:
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    return f"{cpu} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def table(rows: list[dict]) -> str:
    head = (f"{'method':7s} {'backbone':9s} {'step':>8s} " + " ".join(f"{p:>14s}" for p in PHASES)
            + f" {'bb fwd alone':>12s} {'step / target':>13s}")
    lines = [head]
    for r in rows:
        ph = r["phases"]
        # target: dino <= 2 x backbone forward; others <= 2 x (backbone forward + method loss), the loss
        # being the method forward beyond its backbone plus the backward
        loss = ph.get("method_forward", 0) - ph.get("backbone", 0) + ph.get("backward", 0)
        reference = r["backbone_forward_s"] + (0 if r["method"] == "dino" else loss)
        ratio = r["step_s"] / (2 * reference) if reference == reference and reference > 0 else float("nan")
        lines.append(f"{r['method']:7s} {r['backbone']:9s} {r['step_s'] * 1e3:7.0f}ms "
                     + " ".join(f"{ph.get(p, 0) * 1e3:12.0f}ms" for p in PHASES)
                     + f" {r['backbone_forward_s'] * 1e3:10.0f}ms {ratio:13.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="?", default=",".join(METHODS.names()))
    parser.add_argument("--batch", type=int, default=64 if CUDA else 2)
    parser.add_argument("--res", type=int, default=224 if CUDA else 112)
    parser.add_argument("--steps", type=int, default=5 if CUDA else 1)
    parser.add_argument("--workers", type=int, default=8 if CUDA else 0)
    args = parser.parse_args()
    device = torch.device("cuda" if CUDA else "cpu")
    rows = []
    for name in args.methods.split(","):
        rows.append(profile_method(name, args.batch, args.res, args.steps, args.workers, device))
        print(f"{name}: {rows[-1]['step_s'] * 1e3:.0f} ms/step (load {os.getloadavg()[0]:.1f})", flush=True)
    header = (f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {machine()}, batch {args.batch} "
              f"@ {args.res}px, {args.steps} profiled step(s), {args.workers} loader workers, "
              f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}; 'step / target' <= 1 meets issue 15's target")
    text = header + "\n" + table(rows)
    print(text)
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "profile_step.txt"), "a") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
