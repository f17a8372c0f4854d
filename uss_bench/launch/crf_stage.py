"""The dense CRF as a separate CPU stage over saved per-image logits (reference §B, point 4).

On a cluster the GPU job evaluates without the CRF and writes its per-image logits with
:class:`LogitsWriter` (``<results>/logits/<run_id>/shard-NNNNN.npz`` + ``meta.json``). This stage then
refines every shard on CPUs (a job array, one task per shard), writes per-shard confusion matrices
(``<results>/crf/<run_id>/``), merges them with the engine's own matching and metrics, and adds
``cluster_crf`` / ``linear_crf`` to the run's record. CRF on/off is then a table column without
re-running the GPU model. Every step is idempotent: a finished shard is never recomputed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uss_bench.eval.logits_store import (  # noqa: F401 - re-exported for the stage's users
    HEADS,
    LogitsWriter,
    _atomic_savez,
    _numpy,
    crf_dir,
    load_meta,
    logits_dir,
    writer_for_run,
)


def crf_shard(shard: str | Path, out: str | Path, crf_params: dict[str, Any], n_clusters: int,
              n_classes: int, stored: str = "logits") -> str:
    """CPU job: CRF-refine every image of one shard; write its confusion matrices. Idempotent.

    ``stored``: what the shard's head arrays hold, ``log_softmax`` (LogitsWriter today) or raw
    ``logits`` (older dumps; their log_softmax is then taken here, on the CPU).
    """
    import torch

    from uss_bench.eval.confusion import confusion_matrix
    from uss_bench.eval.crf_inputs import crf_log_probs, crf_probs_from_log_probs
    from uss_bench.eval.crf_kernel import CRFParams, dense_crf

    out = Path(out)
    if out.is_file():
        return str(out)
    torch.set_num_threads(1)
    params = CRFParams(**crf_params)
    data = np.load(shard)
    sizes = {"cluster": n_clusters, "linear": n_classes}
    conf = {head: torch.zeros(sizes[head], n_classes, dtype=torch.int64) for head in HEADS}
    for i in range(data["image"].shape[0]):
        label = torch.from_numpy(data["label"][i].astype(np.int64))
        for head in HEADS:
            # the same steps as the in-loop CRF input (eval/crf_inputs.py); the kernel builds the image
            log_probs = torch.from_numpy(data[head][i : i + 1]).float()
            if stored == "logits":
                log_probs = crf_log_probs(log_probs)
            (probs,) = crf_probs_from_log_probs(log_probs)
            refined = dense_crf(data["image"][i], probs, params)
            conf[head] += confusion_matrix(torch.from_numpy(refined.astype(np.int64)), label,
                                           sizes[head], n_classes)
    _atomic_savez(out, **{f"{head}_crf": conf[head].numpy() for head in HEADS})
    return str(out)


def shard_jobs(results_dir: str | Path, run_id: str) -> list[tuple[Path, Path]]:
    """(input shard, output confusion file) for every shard of the run not refined yet."""
    meta = load_meta(results_dir, run_id)
    src, dst = logits_dir(results_dir, run_id), crf_dir(results_dir, run_id)
    pairs = [(src / f"shard-{k:05d}.npz", dst / f"shard-{k:05d}.npz") for k in range(meta["n_shards"])]
    return [(s, d) for s, d in pairs if not d.is_file()]


def merge(results_dir: str | Path, run_id: str) -> dict[str, Any]:
    """Sum the shards' confusions and score them with the engine's matching and metrics."""
    from uss_bench.eval.matching import match
    from uss_bench.eval.metrics import prepare_cluster_confusion, segmentation_metrics

    meta = load_meta(results_dir, run_id)
    out_dir = crf_dir(results_dir, run_id)
    missing = [k for k in range(meta["n_shards"]) if not (out_dir / f"shard-{k:05d}.npz").is_file()]
    if missing:
        raise FileNotFoundError(f"CRF stage of run {run_id} is incomplete: shards {missing[:10]} missing in {out_dir}")
    totals: dict[str, np.ndarray] = {}
    for k in range(meta["n_shards"]):
        with np.load(out_dir / f"shard-{k:05d}.npz") as data:
            for key in data.files:
                totals[key] = totals.get(key, 0) + data[key]
    metrics: dict[str, Any] = {}
    for key in ("cluster_crf", "linear_crf"):
        rule = meta["matching"] if key.startswith("cluster") else "identity"
        conf = totals[key]
        if key.startswith("cluster"):  # dumps written before the option existed count them as errors
            conf = prepare_cluster_confusion(conf, meta.get("extra_cluster_pixels", "error"))
        assignment = match(conf, rule)
        scored = segmentation_metrics(conf, assignment, meta["miou_averaging"])
        metrics[key] = scored.as_dict(meta["class_names"])
        metrics[key]["n_pixels"] = int(conf.sum())
        if key.startswith("cluster"):
            metrics[key]["assignment"] = assignment.tolist()
    return metrics


def apply_to_record(results_dir: str | Path, run_id: str) -> dict[str, Any]:
    """Add the merged CRF metrics to the run's record (atomically) and return the record.

    Under the run's lock, read then written, so a run of the same spec working at the same time never
    has its record overwritten by a stale copy (:class:`RunLockedError` names the holder instead).
    """
    from uss_bench.results.locks import run_lock
    from uss_bench.results.records import load_record, write_record

    metrics = merge(results_dir, run_id)  # the slow part, outside the lock
    meta = load_meta(results_dir, run_id)
    with run_lock(results_dir, run_id):
        record = load_record(results_dir, run_id)
        if record is None:
            raise FileNotFoundError(f"no record for run {run_id} under {Path(results_dir) / 'runs'}")
        record.setdefault("metrics", {}).update(metrics)
        record["crf"] = {"stage": "separate", "params": meta["crf_params"], "logits_dtype": meta["dtype"],
                         "n_images": meta["n_images"]}
        write_record(results_dir, record)
    return record


def run_stage(
    results_dir: str | Path,
    run_ids: Sequence[str],
    executor: str = "inline",
    profile: str | None = "cpu",
    overrides: dict[str, Any] | None = None,
    timeout_s: float = 6 * 3600,
    poll_s: float = 5.0,
) -> list[dict[str, Any]]:
    """Refine every pending shard of ``run_ids`` (inline, local processes or a Slurm array), then merge.

    Waiting is bounded: a task that ended without writing its output is an error naming its log.
    """
    results_dir = Path(results_dir).resolve()
    tasks: list[tuple[Path, Path, dict[str, Any], int, int, str]] = []
    for run_id in run_ids:
        meta = load_meta(results_dir, run_id)
        for src, dst in shard_jobs(results_dir, run_id):
            tasks.append((src, dst, meta["crf_params"], meta["n_clusters"], meta["n_classes"],
                          meta.get("stored", "logits")))
    if executor == "inline":
        for task in tasks:
            crf_shard(*task)
    elif tasks:
        _run_array(tasks, results_dir, executor, profile, overrides or {}, timeout_s, poll_s)
    return [apply_to_record(results_dir, run_id) for run_id in run_ids]


def _run_array(tasks: list[tuple], results_dir: Path, executor: str, profile: str | None,
               overrides: dict[str, Any], timeout_s: float, poll_s: float) -> None:
    import submitit

    from uss_bench.launch import profiles, watchdog
    from uss_bench.launch.executors import LaunchError, _make_executor, check_gpus, chunks, max_array_size

    resources = profiles.merge(profiles.load_profile(profile) if profile else {}, overrides)
    resources["gpus"] = 0  # a CPU stage by definition
    folder = results_dir / "crf" / "_jobs" / time.strftime("%Y%m%d-%H%M%S")
    ex = _make_executor("slurm" if executor == "slurm" else "local", folder, resources)
    if executor == "slurm":
        check_gpus(resources, "CRF stage")
    jobs = []
    cap = max_array_size() if executor == "slurm" else len(tasks)
    for chunk in chunks(tasks, min(cap, resources.get("max_array_size", cap))):
        jobs += ex.map_array(crf_shard, *zip(*chunk))
    start = time.monotonic()
    grace: dict[str, float] = {}
    while True:
        pending = [(job, task) for job, task in zip(jobs, tasks) if not task[1].is_file()]
        if not pending:
            return
        for job, task in pending:
            result = watchdog.read_result(folder, job.job_id)
            if result is not None and result[0] == "error":
                raise LaunchError(f"CRF task {job.job_id} on {task[0]} failed:\n{str(result[1])[-2000:]}")
        if executor == "slurm":
            snap = watchdog.squeue_snapshot([j.job_id for j, _ in pending]) or {}
            for job, task in pending:
                if snap.get(job.job_id, ("?",))[0] in watchdog.ACTIVE_STATES:
                    grace.pop(job.job_id, None)
                elif time.monotonic() - grace.setdefault(job.job_id, time.monotonic()) > 10:
                    raise LaunchError(f"CRF task {job.job_id} on {task[0]} ended without output:\n"
                                      f"{watchdog.log_tail(folder, job.job_id)}")
        elif all(isinstance(j, submitit.LocalJob) and j.done() for j, _ in pending):
            time.sleep(1.0)  # outputs are renamed into place just before the process exits
            if any(not t[1].is_file() for _, t in pending):
                job, task = pending[0]
                raise LaunchError(f"CRF task {job.job_id} on {task[0]} ended without output:\n"
                                  f"{watchdog.log_tail(folder, job.job_id)}")
        if time.monotonic() - start > timeout_s:
            raise LaunchError(f"CRF stage: {len(pending)} shard(s) unfinished after {timeout_s:.0f} s "
                              f"(jobs in {folder})")
        time.sleep(poll_s)
