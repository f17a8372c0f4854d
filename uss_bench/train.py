"""The one training loop, shared by every method.

Per step: the method's loss (labels stripped from the batch), then the probes on the detached
code, each with its own optimiser, as STEGO/HP/PPAP do. AMP on CUDA when the card asks for it,
gradient clipping on the method's clipped groups, periodic atomic checkpoints with RNG states so a
resumed run is bit-identical to an uninterrupted one, optional checkpoint selection on the eval
split (only when the protocol asks for it), JSON-lines logs and a progress bar on a terminal.
"""

from __future__ import annotations

import copy
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from uss_bench.data.base import collate
from uss_bench.data.transforms import to_unit_float
from uss_bench.eval.probes import Probes
from uss_bench.methods.base import MethodAdapter

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class StepBatchSampler(Sampler[list[int]]):
    """Batches as a pure function of (seed, step): epoch e is a seeded permutation, so resuming at
    any step yields exactly the batches an uninterrupted run would have seen."""

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int, total_steps: int) -> None:
        if n < batch_size:
            raise ValueError(f"training split has {n} images, fewer than the batch size {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_step, self.total_steps = start_step, total_steps
        self.steps_per_epoch = n // batch_size  # drop_last, as the official loaders

    def batch(self, step: int) -> list[int]:
        epoch, pos = divmod(step, self.steps_per_epoch)
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        return perm[pos * self.batch_size : (pos + 1) * self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.total_steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return self.total_steps - self.start_step


@dataclass
class TrainSettings:
    steps: int
    batch_size: int
    linear_lr: float
    cluster_lr: float
    amp: bool = False
    clip_grad_norm: float | None = None
    val_every: int = 100
    selection: str = "last"  # last | val_cluster_miou | val_sum4
    checkpoint_every: int = 0
    num_workers: int = 0
    seed: int = 0
    log_every: int = 10


@dataclass
class TrainResult:
    steps: int
    selected_step: int
    selection: str
    last_losses: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None
    val_history: list[dict[str, Any]] = field(default_factory=list)


def build_optimizers(method: MethodAdapter, probes: Probes, s: TrainSettings) -> dict[str, torch.optim.Optimizer]:
    optimizers: dict[str, torch.optim.Optimizer] = {}
    for i, group in enumerate(method.param_groups()):
        params = [p for p in group["params"] if p.requires_grad]
        if not params:
            continue
        kind = group.get("optimizer", "adam")
        if kind not in OPTIMIZERS:
            raise ValueError(f"{method.name}: unknown optimizer {kind!r}; known: {', '.join(OPTIMIZERS)}")
        kwargs = {"lr": group["lr"], "weight_decay": group.get("weight_decay", 0.0)}
        if kind == "sgd":
            kwargs["momentum"] = group.get("momentum", 0.0)
        optimizers[group.get("name", f"method{i}")] = OPTIMIZERS[kind](params, **kwargs)
    optimizers["cluster_probe"] = torch.optim.Adam(probes.cluster.parameters(), lr=s.cluster_lr)
    optimizers["linear_probe"] = torch.optim.Adam(probes.linear.parameters(), lr=s.linear_lr)
    return optimizers


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a crash mid-write never leaves a truncated last.pt


def _state(method: MethodAdapter, probes: Probes) -> dict[str, Any]:
    return {"method": copy.deepcopy(method.state_dict()), "probes": copy.deepcopy(probes.state_dict())}


def _selection_score(metrics: dict[str, Any], rule: str) -> float:
    if rule == "val_cluster_miou":
        return metrics["cluster"]["miou"]
    return sum(metrics[k][m] for k in ("cluster", "linear") for m in ("miou", "acc"))


class JsonlLog:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **entry: Any) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry, default=float) + "\n")


def train(
    method: MethodAdapter,
    probes: Probes,
    train_set: Dataset,
    settings: TrainSettings,
    device: torch.device,
    checkpoint_path: Path | None = None,
    log_path: Path | None = None,
    validate: Callable[[], dict[str, Any]] | None = None,
    label: str = "train",
) -> TrainResult:
    s = settings
    method.to(device)
    probes.to(device)
    optimizers = build_optimizers(method, probes, s)
    use_amp = s.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", init_scale=2048, growth_interval=1000, enabled=use_amp)
    start_step, resumed_from = 0, None
    best: dict[str, Any] = {"score": -float("inf"), "step": s.steps, "state": None}
    history: list[dict[str, Any]] = []
    if checkpoint_path is not None and checkpoint_path.is_file():
        ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        method.load_state_dict(ckpt["method"])
        probes.load_state_dict(ckpt["probes"])
        for name, opt in optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        best, history = ckpt["best"], ckpt["val_history"]
        start_step = resumed_from = ckpt["step"]
    log = JsonlLog(log_path)
    sampler = StepBatchSampler(len(train_set), s.batch_size, s.seed, start_step, s.steps)
    # The loader draws its worker base seed from `generator`, not from the global RNG, so creating
    # it after a resume does not shift the random stream the method's dropout/sampling uses.
    loader = DataLoader(
        train_set, batch_sampler=sampler, num_workers=s.num_workers, collate_fn=collate,
        generator=torch.Generator().manual_seed(s.seed),
        pin_memory=device.type == "cuda",  # uint8 batches from pinned memory: the non_blocking copy overlaps
    )
    method.train()
    probes.train()
    # Also on resume: the hook re-attaches the train set; work already done lives in buffers and is skipped.
    method.on_train_start(train_set)
    progress = _progress(s.steps, start_step, label)

    def loader_factory() -> DataLoader:
        # For per-epoch passes over the train split (PiCIE's k-means): fixed order, no labels used.
        return DataLoader(train_set, batch_size=s.batch_size, shuffle=False, num_workers=s.num_workers,
                          collate_fn=collate, generator=torch.Generator().manual_seed(s.seed))

    clip_params = [p for g in method.param_groups() if g.get("clip", True) for p in g["params"] if p.requires_grad]
    last_losses: dict[str, float] = {}
    t0 = time.perf_counter()
    step = start_step
    for step, batch in enumerate(loader, start=start_step):
        if step % sampler.steps_per_epoch == 0:
            method.on_epoch_start(step // sampler.steps_per_epoch, loader_factory)
        images = to_unit_float(batch["image"].to(device, non_blocking=True))
        labels = batch["label"].to(device, non_blocking=True)
        method_batch = {"image": images, "id": batch["id"], "index": batch["index"]}  # never the labels
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            out = method.training_step(method_batch, step)
        loss = out.get("loss")
        code = out.get("code")
        if code is None:
            with torch.no_grad():
                code = method.embed(images)
        code = code.detach().float()
        if loss is not None and loss.requires_grad:
            scaler.scale(loss).backward()
            if s.clip_grad_norm:
                for name, opt in optimizers.items():
                    if not name.endswith("_probe"):
                        scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(clip_params, s.clip_grad_norm)
            for name, opt in optimizers.items():
                if not name.endswith("_probe"):
                    scaler.step(opt)
            scaler.update()
        cluster_loss = probes.cluster.loss(code)
        linear_loss = probes.linear.loss(code, labels)
        (cluster_loss + linear_loss).backward()
        optimizers["cluster_probe"].step()
        optimizers["linear_probe"].step()
        done = step + 1
        log_now = done % s.log_every == 0 or done == s.steps
        if log_now or progress is not None:  # .item() syncs the GPU: only when the values are shown
            last_losses = {k: v.item() for k, v in out.items()
                           if k != "code" and torch.is_tensor(v) and v.numel() == 1}
            last_losses.update(cluster_probe=cluster_loss.item(), linear_probe=linear_loss.item())
        if log_now:
            log.write(step=done, time_s=round(time.perf_counter() - t0, 3), **last_losses)
        if progress is not None:
            progress.update(1)
            progress.set_postfix({k: f"{v:.3f}" for k, v in list(last_losses.items())[:3]})
        if validate is not None and s.selection != "last" and (done % s.val_every == 0 or done == s.steps):
            metrics = validate()
            score = _selection_score(metrics, s.selection)
            history.append({"step": done, "score": score})
            log.write(step=done, val_score=score)
            if score > best["score"]:
                best = {"score": score, "step": done, "state": _state(method, probes)}
        if checkpoint_path is not None and s.checkpoint_every and done % s.checkpoint_every == 0 and done < s.steps:
            save_checkpoint(
                checkpoint_path,
                {
                    "step": done,
                    "method": method.state_dict(),
                    "probes": probes.state_dict(),
                    "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                    "scaler": scaler.state_dict(),
                    "rng": _rng_state(),
                    "best": best,
                    "val_history": history,
                },
            )
    if progress is not None:
        progress.close()
    selected = s.steps
    if s.selection != "last" and best["state"] is not None:
        method.load_state_dict(best["state"]["method"])
        probes.load_state_dict(best["state"]["probes"])
        selected = best["step"]
    return TrainResult(
        steps=s.steps,
        selected_step=selected,
        selection=s.selection,
        last_losses=last_losses,
        resumed_from=resumed_from,
        val_history=history,
    )


def _progress(total: int, initial: int, label: str):
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=label, dynamic_ncols=True, leave=False)
