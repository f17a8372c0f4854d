"""``uss-bench eval``: evaluate a released STEGO / HP / PPAP checkpoint with the shared engine.

    uss-bench eval --method stego --checkpoint cocostuff27_vit_base_5.ckpt --datasets cocostuff27

The head dim and the backbone are read from the checkpoint (it carries the DINO ViT), the method's
own protocol is used unless ``--protocol`` says otherwise, and a normal run record is written whose
``spec.overrides`` name the checkpoint file and its sha256.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from uss_bench.commands.run import RequestError, add_env_arguments, check_env_arguments, make_env, parse_overrides

EVAL_WEIGHTS_HINT = "or evaluate a checkpoint that holds the ViT (STEGO .ckpt files do)"


class EvalInputError(ValueError):
    """A checkpoint, dataset or weights file that cannot be evaluated; found before any record is written."""


def evaluate_checkpoint(
    method: str, checkpoint: str | Path, dataset: str, env: Any, backbone: str | None = None,
    protocol: str | None = None, preset: str = "default", seed: int = 0, overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Import ``checkpoint`` into ``method``, evaluate it on ``dataset`` and write the run record."""
    from uss_bench.config import resolve
    from uss_bench.data.build import build_dataset, dataset_problems
    from uss_bench.data.transforms import SegTransform
    from uss_bench.eval.crf import CRFRunner
    from uss_bench.eval.crf_kernel import CRFParams
    from uss_bench.eval.engine import evaluate
    from uss_bench.eval.probes import Probes
    from uss_bench.methods.base import MethodContext
    from uss_bench.official_checkpoints import import_checkpoint, infer_settings, read_official, sha256
    from uss_bench.paths import load_card
    from uss_bench.pipeline import environment
    from uss_bench.registry import BACKBONES, METHODS
    from uss_bench.results.records import write_record
    from uss_bench.spec import RunSpec
    from uss_bench.train import seed_everything

    cls = METHODS.get(method)
    ckpt = read_official(checkpoint, method)  # unreadable or foreign files fail here, before any record
    inferred = infer_settings(ckpt)
    if backbone and inferred.get("backbone") and backbone != inferred["backbone"]:
        raise EvalInputError(f"--backbones {backbone} but {ckpt.path} holds a {inferred['backbone']} ViT")
    backbone = backbone or inferred.get("backbone") or load_card("methods", method).get("default_backbone", "vit-s8")
    user = dict(overrides or {})
    if "dim" in inferred:
        user.setdefault("hparams.dim", inferred["dim"])
    base = RunSpec(method=method, dataset=dataset, backbone=backbone, seed=seed,
                   protocol=protocol or load_card("methods", method).get("default_protocol", "uss"),
                   preset=preset, random_init=False, overrides=user)
    spec = replace(base, overrides={**user, "checkpoint.path": str(ckpt.path.resolve()),
                                    "checkpoint.sha256": sha256(ckpt.path)})
    # ---- every input check before the record exists: a bad request leaves no failed record ----
    config = resolve(base)
    prot = config.protocol.with_overrides(checkpoint_selection="last")  # nothing trains: nothing to select
    problems = dataset_problems(dataset, env.data_root, (prot.eval_split,), preset)
    if problems:
        raise EvalInputError("; ".join(problems))
    eval_set = build_dataset(dataset, env.data_root, prot.eval_split,
                             SegTransform(prot.eval_res, prot.crop, prot.image_interpolation), preset)
    n_classes = eval_set.n_classes
    if inferred.get("n_classes", n_classes) != n_classes:
        raise EvalInputError(f"{ckpt.path} has a {inferred['n_classes']}-class linear probe but {dataset} has "
                             f"{n_classes} classes")
    backbone_spec = BACKBONES.get(backbone)
    if not ckpt.has_backbone:  # the official STEGO files carry the DINO ViT; HP/PPAP may not
        problem = backbone_spec.weights_problem(env.weights_dir, EVAL_WEIGHTS_HINT)
        if problem:
            raise EvalInputError(problem)
    record: dict[str, Any] = {"run_id": spec.run_id, "spec": spec.to_dict(), "status": "running",
                              "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    started = time.perf_counter()
    try:
        record.update(protocol=prot.as_dict(), config=config.as_dict(), environment=environment(env))
        seed_everything(seed)
        device = env.torch_device()
        vit = backbone_spec.build(env.weights_dir, random_init=ckpt.has_backbone)
        context = MethodContext(dataset=dataset, backbone_name=backbone, n_classes=n_classes,
                                batch_size=int(config.train["batch_size"]), total_steps=0, steps_per_epoch=1,
                                train_res=int(config.train["train_res"]), device=device, data_root=env.data_root,
                                extra={"eval_only": True, "seed": seed})
        model = cls(vit, n_classes, config.hparams, context)
        probes = Probes(model.embed_dim, n_classes, prot.extra_clusters)
        loaded = import_checkpoint(model, probes, ckpt)
        model.to(device)
        probes.to(device)
        crf = CRFRunner(env.crf_workers, CRFParams(**prot.crf_params)) if prot.crf else None
        t_eval = time.perf_counter()
        metrics = evaluate(model, probes, eval_set, prot, eval_set.classes, device,
                           batch_size=int(config.train["eval_batch_size"]), num_workers=env.num_workers,
                           crf_runner=crf, use_crf=crf is not None)
        if crf is not None:
            record["crf"] = crf.describe()
            crf.close()
        record.update(status="completed", metrics=metrics, checkpoint=loaded,
                      train={"steps": 0, "selected_step": 0, "selection": "checkpoint",
                             "n_eval_images": len(eval_set)},
                      timings={"train_s": 0.0, "eval_s": round(time.perf_counter() - t_eval, 3),
                               "total_s": round(time.perf_counter() - started, 3)})
        write_record(env.results_dir, record)
        return record
    except BaseException as exc:
        record.update(status="failed",
                      error={"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()},
                      timings={"total_s": round(time.perf_counter() - started, 3)})
        write_record(env.results_dir, record)
        raise


def handle(args: argparse.Namespace) -> int:
    from uss_bench.backbones.weights import WeightsFileError
    from uss_bench.data.base import DatasetError
    from uss_bench.official_checkpoints import CheckpointReadError
    from uss_bench.registry import BACKBONES, DATASETS, UnknownNameError
    from uss_bench.results.summary import records_table

    try:
        check_env_arguments(args)
        datasets = DATASETS.select(args.datasets)
        backbones = BACKBONES.select(args.backbones) if args.backbones else [None]
        if len(backbones) > 1:
            raise RequestError(f"--backbones {args.backbones}: a checkpoint has one backbone; name one")
        env = make_env(args)
        overrides = parse_overrides(args.set)
        records = []
        for dataset in datasets:
            records.append(evaluate_checkpoint(
                args.method, args.checkpoint, dataset, env, backbone=backbones[0], protocol=args.protocol,
                preset=args.preset, seed=args.seed, overrides=overrides,
            ))
    except (FileNotFoundError, ValueError, KeyError, UnknownNameError, CheckpointReadError, WeightsFileError,
            DatasetError) as exc:
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        print(f"uss-bench eval: error: {message}", file=sys.stderr)
        return 2
    print(records_table(records))
    for record in records:
        print(f"record: {env.results_dir}/runs/{record['run_id']}.json", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate an official STEGO/HP/PPAP checkpoint with the shared engine")
    parser.add_argument("--method", required=True, choices=["stego", "hp", "ppap"])
    parser.add_argument("--checkpoint", required=True, type=Path,
                        help="STEGO .ckpt, HP/PPAP .pth, or a run directory holding ckpt.pth / best.pth")
    # the same names as `run` (--dataset/--backbone still accepted)
    parser.add_argument("--datasets", "--dataset", dest="datasets", required=True,
                        help="e.g. cocostuff27 | 'cocostuff*' (each is evaluated)")
    parser.add_argument("--backbones", "--backbone", dest="backbones", default=None,
                        help="default: read from the checkpoint")
    parser.add_argument("--protocol", default=None, help="default: the method card's (stego|hp|ppap)")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="e.g. protocol.crf=false")
    add_env_arguments(parser)  # no --checkpoint-every or --defer-crf: nothing trains, the CRF runs here
    parser.set_defaults(func=handle)
