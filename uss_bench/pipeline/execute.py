"""One run end to end: build the method, train, evaluate, write the record.

``execute_spec`` is the module-level function every executor runs (inline, or pickled with its
small RunSpec + RunEnv into a submitit job). It resumes from the run's last checkpoint, writes the
record atomically, and never recomputes a completed record unless ``force``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

import uss_bench
from uss_bench.config import RunConfig, resolve
from uss_bench.data.build import build_dataset
from uss_bench.data.transforms import SegTransform
from uss_bench.eval.crf import CRFRunner
from uss_bench.eval.crf_kernel import CRFParams
from uss_bench.eval.engine import evaluate
from uss_bench.eval.evaluators import extra_metrics
from uss_bench.eval.logits_store import writer_for_run
from uss_bench.eval.probes import Probes
from uss_bench.methods.base import MethodAdapter, MethodContext
from uss_bench.paths import PROJECT_ROOT
from uss_bench.pipeline.env import RunEnv
from uss_bench.pipeline.plan import error_cause, plan_runs
from uss_bench.registry import BACKBONES, METHODS
from uss_bench.results.locks import RunLockedError, run_lock
from uss_bench.results.records import CorruptRecordError, load_record, quarantine, write_record
from uss_bench.spec import RunSpec
from uss_bench.train import JsonlLog, TrainSettings, save_checkpoint, seed_everything, train

log = logging.getLogger(__name__)


def build_method(config: RunConfig, env: RunEnv, n_classes: int, steps_per_epoch: int) -> MethodAdapter:
    spec = config.spec
    cls = METHODS.get(spec.method)
    backbone = None
    if cls.backbone_family == "vit":
        backbone = BACKBONES.get(spec.backbone).build(env.weights_dir, random_init=spec.random_init)
    context = MethodContext(
        dataset=spec.dataset,
        backbone_name=spec.backbone,
        n_classes=n_classes,
        batch_size=config.train["batch_size"],
        total_steps=config.train["steps"],
        steps_per_epoch=steps_per_epoch,
        train_res=config.train["train_res"],
        device=env.torch_device(),
        data_root=env.data_root,
        extra={"random_init": spec.random_init, "seed": spec.seed, "weights_dir": env.weights_dir},
    )
    return cls(backbone, n_classes, config.hparams, context)


def environment(env: RunEnv) -> dict[str, Any]:
    import timm

    return {
        "uss_bench": uss_bench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "device": str(env.torch_device()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "host": platform.node(),
        "git_sha": git_sha(),
    }


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def save_predictions(results_dir: Path, run_id: str, predictions: dict[str, Any]) -> None:
    """Matched cluster predictions of the dataset card's figure ids, for `uss-bench figure`."""
    from PIL import Image

    out = Path(results_dir) / "predictions" / run_id
    for image_id, pred in predictions.items():
        if pred is None:
            continue
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{image_id}.png.tmp"
        Image.fromarray(pred).save(tmp, format="PNG")
        tmp.replace(out / f"{image_id}.png")


def execute_spec(spec: RunSpec, env: RunEnv, keep_weights: Path | None = None) -> dict[str, Any]:
    """One run in this process; returns its record (already written).

    ``keep_weights``: also save the trained method's state there (before the record), for a later
    stage that starts from it (``train.init_stage``).

    The run's lock (``<results>/locks/<run_id>.lock``) is held throughout, so a second process asked for
    the same run raises :class:`~uss_bench.results.locks.RunLockedError` instead of training it again.
    A corrupt record is moved aside (``*.json.corrupt``) and the run is computed again.
    """
    with run_lock(env.results_dir, spec.run_id):
        try:
            existing = load_record(env.results_dir, spec.run_id)
        except CorruptRecordError as exc:
            moved = quarantine(exc.path)
            log.warning("corrupt run record %s: moved it to %s and the run is computed again", exc.path, moved)
            existing = None
        if existing is not None and existing.get("status") == "completed" and not env.force:
            return existing
        return _execute(spec, env, keep_weights)


def stage_weights_path(results_dir: str | Path, run_id: str) -> Path:
    """Where a stage run's final weights are kept for the runs that start from it."""
    return Path(results_dir) / "stages" / f"{run_id}.pt"


def _train_init_stage(spec: RunSpec, env: RunEnv, preset: str) -> dict[str, Any]:
    """Train (or reuse) the earlier stage ``preset`` of ``spec`` as its own run; returns where its weights are.

    The stage is an ordinary run with its own id, lock, record and resume; a completed stage whose
    weights are still on disk is reused, one whose weights are gone is trained again.
    """
    first = spec.stage(preset)
    weights = stage_weights_path(env.results_dir, first.run_id)
    try:
        existing = load_record(env.results_dir, first.run_id)
    except CorruptRecordError:
        existing = None  # execute_spec moves it aside and trains the stage again
    completed = existing is not None and existing.get("status") == "completed"
    if not (completed and weights.is_file()):
        print(f"{spec.label()}: training its stage {preset!r} first: {first.label()} (run {first.run_id})",
              file=sys.stderr, flush=True)
        # named in this run's training log, so the progress display follows the stage's steps
        JsonlLog(Path(env.results_dir) / "logs" / f"{spec.run_id}.jsonl").write(stage=preset, stage_run_id=first.run_id)
        stage_env = dataclasses.replace(env, force=completed)  # completed, but its weights are gone
        existing = execute_spec(first, stage_env, keep_weights=weights)
    if existing.get("status") != "completed" or not weights.is_file():
        raise RuntimeError(f"stage {preset!r} (run {first.run_id}) did not complete; see its record")
    return {"preset": preset, "run_id": first.run_id, "weights": str(weights)}


def _execute(spec: RunSpec, env: RunEnv, keep_weights: Path | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "run_id": spec.run_id,
        "spec": spec.to_dict(),
        "status": "running",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    started = time.perf_counter()
    checkpoint = Path(env.results_dir) / "checkpoints" / spec.run_id / "last.pt"
    try:
        config = resolve(spec)
        protocol = config.protocol
        stage = config.train.get("init_stage")
        if stage and not config.hparams.get("init_from"):  # an explicit init_from wins over the stage
            record["init_stage"] = _train_init_stage(spec, env, stage)
            config.hparams["init_from"] = record["init_stage"]["weights"]
        record["protocol"] = protocol.as_dict()
        record["config"] = config.as_dict()
        record["environment"] = environment(env)
        # The CRF pool starts before any model work (spawned workers, see eval/crf.py).
        crf = None
        if protocol.crf and not env.defer_crf:
            crf = CRFRunner(env.crf_workers, CRFParams(**protocol.crf_params))
        seed_everything(spec.seed)
        device = env.torch_device()
        tcfg = config.train
        data_options = METHODS.get(spec.method).dataset_options(config.hparams)
        train_set = build_dataset(
            spec.dataset, env.data_root, protocol.train_split or config.dataset_card.get("train_split", "train"),
            SegTransform(tcfg["train_res"], "center", protocol.image_interpolation), spec.preset, **data_options,
        )
        eval_set = build_dataset(
            spec.dataset, env.data_root, protocol.eval_split,
            SegTransform(protocol.eval_res, protocol.crop, protocol.image_interpolation), spec.preset, **data_options,
        )
        accumulate = int(tcfg.get("accumulate") or 1)  # micro-batches per step (gradient accumulation)
        steps_per_epoch = max(1, len(train_set) // (tcfg["batch_size"] * accumulate))
        if tcfg.get("epochs"):
            tcfg["steps"] = int(tcfg["epochs"]) * steps_per_epoch
        method = build_method(config, env, train_set.n_classes, steps_per_epoch)
        probes = Probes(method.embed_dim, train_set.n_classes, protocol.extra_clusters)
        settings = TrainSettings(
            steps=int(tcfg["steps"]),
            batch_size=int(tcfg["batch_size"]),
            linear_lr=float(config.probes["linear_lr"]),
            cluster_lr=float(config.probes["cluster_lr"]),
            amp=bool(tcfg["amp"]),
            clip_grad_norm=tcfg["clip_grad_norm"],
            val_every=int(tcfg["val_every"]),
            selection=protocol.checkpoint_selection,
            checkpoint_every=env.checkpoint_every,
            num_workers=env.num_workers,
            seed=spec.seed,
            accumulate=accumulate,
        )
        eval_kwargs = dict(
            class_names=train_set.classes, device=device, batch_size=int(tcfg["eval_batch_size"]),
            num_workers=env.num_workers,
        )

        def validate() -> dict[str, Any]:
            return evaluate(method, probes, eval_set, protocol, use_crf=False, **eval_kwargs)

        t_train = time.perf_counter()
        result = train(
            method, probes, train_set, settings, device,
            checkpoint_path=checkpoint,
            log_path=Path(env.results_dir) / "logs" / f"{spec.run_id}.jsonl",
            validate=validate,
            label=spec.label(),
        )
        t_eval = time.perf_counter()
        method.before_eval(train_set, protocol)  # e.g. PiCIE re-fits its k-means on the train images
        sink = None
        if protocol.crf and env.defer_crf:
            sink = writer_for_run(env.results_dir, spec.run_id, protocol, train_set.classes)
        from uss_bench.results.figures import figure_image_ids  # '#k' ids name positions in the split

        figure_predictions = {i: None for i in figure_image_ids([item.id for item in eval_set.items],
                                                                config.dataset_card.get("figure_ids", []))}
        metrics = evaluate(
            method, probes, eval_set, protocol, crf_runner=crf, use_crf=crf is not None, logits_sink=sink,
            predictions_out=figure_predictions, **eval_kwargs,
        )
        save_predictions(env.results_dir, spec.run_id, figure_predictions)
        # the protocol's extra evaluator, if any (hsg-knn segment vote, ImageNet-S matchings)
        metrics.update(extra_metrics(method, protocol, train_set, eval_set, probes=probes, **eval_kwargs))
        if crf is not None:
            record["crf"] = crf.describe()
            crf.close()
        if sink is not None:
            record["crf"] = {"deferred_to": str(sink.close()), "params": protocol.crf_params}
        record.update(
            status="completed",
            metrics=metrics,
            train={
                "steps": result.steps,
                "selected_step": result.selected_step,
                "selection": result.selection,
                "resumed_from": result.resumed_from,
                "last_losses": result.last_losses,
                "val_history": result.val_history,
                "n_train_images": len(train_set),
                "n_eval_images": len(eval_set),
            },
            timings={
                "train_s": round(t_eval - t_train, 3),
                "eval_s": round(time.perf_counter() - t_eval, 3),
                "total_s": round(time.perf_counter() - started, 3),
            },
        )
        if keep_weights is not None:
            save_checkpoint(keep_weights, {"method": method.state_dict()})  # atomic, before the record
        write_record(env.results_dir, record)
        checkpoint.unlink(missing_ok=True)  # the record is the result; the checkpoint was only for resuming
        return record
    except (KeyboardInterrupt, SystemExit):
        raise  # preemption/requeue (submitit exits via SystemExit): not a failure; the checkpoint resumes it
    except BaseException as exc:
        if _requeue_in_progress(exc):
            raise  # Slurm is requeueing this job: the checkpoint resumes it, so it is not a failed run
        record.update(
            status="failed",
            error={"type": type(exc).__name__, "message": str(exc), "cause": error_cause(exc),
                   "traceback": traceback.format_exc()},
            timings={"total_s": round(time.perf_counter() - started, 3)},
        )
        write_record(env.results_dir, record)
        raise


def run_inline(specs: list[RunSpec], env: RunEnv, keep_going: bool = True, retry_failed: bool = False
               ) -> list[dict[str, Any]]:
    """Run specs one after another here; a failed run is recorded and the sweep goes on.

    Which specs run follows :func:`uss_bench.pipeline.plan.plan_runs`, the rule every executor uses; each
    decision other than "run it" is printed. Returns the records of the requested specs, in order; a run
    that another process is computing appears as ``{"status": "running", "holder": ...}`` (nothing written).
    """
    plan = plan_runs(specs, env.results_dir, force=env.force, retry_failed=retry_failed)
    for line in plan.messages():
        print(line, file=sys.stderr)
    to_run = {s.run_id for s in plan.to_run}
    busy = {s.run_id: holder for s, holder in plan.busy}
    records = []
    for i, spec in enumerate(specs, 1):
        if spec.run_id in busy:
            records.append(_busy_record(spec, busy[spec.run_id]))
            continue
        if spec.run_id not in to_run:
            records.append(load_record(env.results_dir, spec.run_id) or {"run_id": spec.run_id, "status": "failed"})
            continue
        log.info("[%d/%d] %s (run %s)", i, len(specs), spec.label(), spec.run_id)
        try:
            records.append(execute_spec(spec, env))
        except KeyboardInterrupt:
            raise
        except RunLockedError as exc:  # another process took the run after the plan was made
            print(f"{exc}: skipped; its record appears when it finishes", file=sys.stderr)
            records.append(_busy_record(spec, exc.holder))
        except Exception as exc:  # noqa: BLE001 - recorded in the run's failed record
            log.error("run %s failed: %s: %s", spec.run_id, type(exc).__name__, exc)
            if not keep_going:
                raise
            records.append(load_record(env.results_dir, spec.run_id) or {"run_id": spec.run_id, "status": "failed"})
    return records


def _busy_record(spec: RunSpec, holder: dict[str, Any]) -> dict[str, Any]:
    """Stands in for the record of a run another process is computing; never written."""
    return {"run_id": spec.run_id, "spec": spec.to_dict(), "status": "running", "holder": holder}


def _requeue_in_progress(exc: BaseException) -> bool:
    """submitit's requeue handler runs ``scontrol requeue``; Slurm's SIGTERM to the job can kill that child,
    and the resulting CalledProcessError surfaces wherever training was. The job is requeued all the same."""
    cmd = getattr(exc, "cmd", None)
    return isinstance(exc, subprocess.CalledProcessError) and list(cmd or [])[:2] == ["scontrol", "requeue"]

