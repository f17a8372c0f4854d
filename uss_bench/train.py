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
import math
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


def epoch_pass_order(n: int, seed: int, epoch: int) -> list[int]:
    """The train split's order for the per-epoch passes of ``epoch``: a seeded permutation, new every
    epoch (PiCIE reshuffles its train set at each epoch start), independent of the step sampler's."""
    return np.random.default_rng([seed, epoch, 0x9C1E]).permutation(n).tolist()


def epoch_pass_loader(dataset: Dataset, batch_size: int, num_workers: int, seed: int, epoch: int) -> DataLoader:
    """One pass over the train split in ``epoch_pass_order`` (PiCIE's k-means and label passes; every
    pass of one epoch sees the same order, as the official code's do). Labels stay unused."""
    return DataLoader(dataset, batch_size=batch_size, sampler=epoch_pass_order(len(dataset), seed, epoch),
                      num_workers=num_workers, collate_fn=collate, generator=torch.Generator().manual_seed(seed))


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
    accumulate: int = 1  # micro-batches of batch_size per optimizer step (effective batch = batch_size x accumulate)


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


def frozen_backbone_keys(method: MethodAdapter) -> set[str]:
    """State-dict keys of a backbone whose every parameter is frozen (DINO ViTs): it never changes, and a
    resumed run rebuilds it identically from its weights file or seed, so checkpoints leave it out."""
    backbone = getattr(method, "backbone", None)
    if not isinstance(backbone, torch.nn.Module):
        return set()
    params = list(backbone.named_parameters())
    if not params or any(p.requires_grad for _, p in params):
        return set()
    return {f"backbone.{name}" for name, _ in params}


def _backbone_checksum(method: MethodAdapter, frozen: set[str]) -> float:
    """A cheap fingerprint of the frozen backbone: a resume must see the same weights it left out."""
    params = dict(method.named_parameters())
    return float(sum(params[k].detach().double().sum().item() for k in sorted(frozen) if k in params))


def trained_state(method: MethodAdapter, frozen: set[str]) -> dict[str, Any]:
    """What trains and what resuming needs: the method's state without the frozen backbone."""
    return {k: v for k, v in method.state_dict().items() if k not in frozen}


def load_trained_state(method: MethodAdapter, state: dict[str, Any], frozen: set[str]) -> None:
    missing, unexpected = method.load_state_dict(state, strict=False)
    # older checkpoints hold the backbone too (nothing missing then); anything else missing is an error
    if set(missing) - frozen or unexpected:
        raise RuntimeError(f"checkpoint does not fit {method.name}: missing {sorted(set(missing) - frozen)[:5]}, "
                           f"unexpected {unexpected[:5]}")


def _state(method: MethodAdapter, probes: Probes, frozen: set[str]) -> dict[str, Any]:
    return {"method": copy.deepcopy(trained_state(method, frozen)), "probes": copy.deepcopy(probes.state_dict())}


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
    last_losses_resumed: dict[str, float] = {}
    best: dict[str, Any] = {"score": -float("inf"), "step": s.steps, "state": None}
    history: list[dict[str, Any]] = []
    frozen = frozen_backbone_keys(method)
    checksum = _backbone_checksum(method, frozen)
    if checkpoint_path is not None and checkpoint_path.is_file():
        ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        if not math.isclose(ckpt.get("frozen_backbone_checksum", checksum), checksum, rel_tol=1e-9):
            raise RuntimeError(f"{checkpoint_path} was written with other frozen backbone weights than this run "
                               "built; delete it to train from the start")
        load_trained_state(method, ckpt["method"], frozen)
        probes.load_state_dict(ckpt["probes"])
        for name, opt in optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"])
        best, history = ckpt["best"], ckpt["val_history"]
        last_losses_resumed = ckpt.get("last_losses", {})
        start_step = resumed_from = ckpt["step"]
    log = JsonlLog(log_path)
    sampler = StepBatchSampler(len(train_set), s.batch_size * s.accumulate, s.seed, start_step, s.steps)
    # Opt-in learning-rate schedule: a method's ``lr_factor(step, total_steps)`` scales the lr it asked for.
    lr_factor = getattr(method, "lr_factor", None)
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


    clip_params = [p for g in method.param_groups() if g.get("clip", True) for p in g["params"] if p.requires_grad]
    last_losses: dict[str, float] = dict(last_losses_resumed)
    t0 = time.perf_counter()
    step = start_step
    for step, batch in enumerate(loader, start=start_step):
        if step % sampler.steps_per_epoch == 0:
            epoch = step // sampler.steps_per_epoch
            method.on_epoch_start(epoch, lambda e=epoch: epoch_pass_loader(train_set, s.batch_size, s.num_workers,
                                                                           s.seed, e))
        images = to_unit_float(batch["image"].to(device, non_blocking=True))
        labels = batch["label"].to(device, non_blocking=True)
        method_batch = {"image": images, "id": batch["id"], "index": batch["index"]}  # never the labels
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        out, code, has_grad = _accumulate(method, method_batch, step, s.accumulate, scaler, device.type, use_amp)
        if has_grad:
            if lr_factor is not None:
                _scale_lr(optimizers, float(lr_factor(step, s.steps)))
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
            log.write(step=done, total=s.steps, time_s=round(time.perf_counter() - t0, 3), **last_losses)
        if progress is not None:
            progress.update(1)
            progress.set_postfix({k: f"{v:.3f}" for k, v in list(last_losses.items())[:3]})
        if validate is not None and s.selection != "last" and (done % s.val_every == 0 or done == s.steps):
            metrics = validate()
            score = _selection_score(metrics, s.selection)
            history.append({"step": done, "score": score})
            log.write(step=done, val_score=score)
            if score > best["score"]:
                best = {"score": score, "step": done, "state": _state(method, probes, frozen)}
        # also after the last step: evaluation can still fail (a corrupt eval image), and a re-run after the
        # fix then resumes here instead of training again; the record's writer deletes it on success
        if checkpoint_path is not None and s.checkpoint_every and (done % s.checkpoint_every == 0 or done == s.steps):
            save_checkpoint(
                checkpoint_path,
                {
                    "step": done,
                    "method": trained_state(method, frozen),
                    "frozen_backbone_checksum": checksum,
                    "probes": probes.state_dict(),
                    "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                    "scaler": scaler.state_dict(),
                    "rng": _rng_state(),
                    "best": best,
                    "val_history": history,
                    "last_losses": last_losses,
                },
            )
    if progress is not None:
        progress.close()
    selected = s.steps
    if s.selection != "last" and best["state"] is not None:
        load_trained_state(method, best["state"]["method"], frozen)
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


def _micro_batches(batch: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Split a batch into n consecutive micro-batches (tensors and lists alike)."""
    size = len(batch["id"]) // n
    return [{k: v[i * size : (i + 1) * size] for k, v in batch.items()} for i in range(n)]


def _accumulate(method: MethodAdapter, batch: dict[str, Any], step: int, n: int, scaler: torch.amp.GradScaler,
                device_type: str, use_amp: bool) -> tuple[dict[str, Any], torch.Tensor, bool]:
    """Forward and backward over n micro-batches, each loss backpropagated as loss / n (gradient
    accumulation; n = 1 is the plain step). -> (outputs, scalar losses averaged over micro-batches
    when n > 1; probe code of the whole batch; whether any gradient was produced).
    """
    outs, codes, has_grad = [], [], False
    for part in _micro_batches(batch, n) if n > 1 else [batch]:
        with torch.autocast(device_type, dtype=torch.float16, enabled=use_amp):
            out = method.training_step(part, step)
        code = out.get("code")
        if code is None:
            with torch.no_grad():
                code = method.embed(part["image"])
        codes.append(code.detach().float())
        loss = out.get("loss")
        if loss is not None and loss.requires_grad:
            scaler.scale(loss / n if n > 1 else loss).backward()
            has_grad = True
        outs.append(out)
    if n == 1:
        return outs[0], codes[0], has_grad
    merged = {k: torch.stack([o[k].detach() for o in outs]).mean() for k, v in outs[0].items()
              if k != "code" and torch.is_tensor(v) and v.numel() == 1}
    return merged, torch.cat(codes), has_grad


def _scale_lr(optimizers: dict[str, torch.optim.Optimizer], factor: float) -> None:
    """Set every method group's lr to factor x the lr it was built with (probes keep theirs)."""
    for name, opt in optimizers.items():
        if not name.endswith("_probe"):
            for group in opt.param_groups:
                group["lr"] = group.setdefault("base_lr", group["lr"]) * factor


def _progress(total: int, initial: int, label: str):
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=label, dynamic_ncols=True, leave=False)
