"""Executors: run a list of RunSpecs inline, as local submitit processes, or as Slurm job arrays.

- One submitit AutoExecutor per distinct resource profile (method card <- profile <- CLI overrides);
  each group is submitted as job arrays of at most the cluster's MaxArraySize tasks.
- The pickled callable is :class:`uss_bench.launch.jobs.SpecJob` with the RunSpec and RunEnv: small.
- Submission writes a sweep manifest and returns; waiting is separate (:func:`wait_for`) and bounded.
- The ``local`` executor runs at most ``array_parallelism`` (default 1) jobs at once and always waits.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from uss_bench.launch import manifest as mf
from uss_bench.launch import profiles, watchdog

EXECUTORS = ("inline", "local", "slurm")
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize
_CLUSTER_INFO_TIMEOUT_S = 20


class LaunchError(RuntimeError):
    """A sweep that cannot be submitted as asked; raised before any job is queued."""


# ---------------------------------------------------------------- cluster facts


def slurm_available() -> bool:
    """True when Slurm clients exist and a controller answers (``sinfo``, bounded wait)."""
    if not shutil.which("sbatch") or not shutil.which("sinfo"):
        return False
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def default_executor() -> str:
    """``$USS_BENCH_EXECUTOR``, else slurm where a Slurm controller answers, else local."""
    chosen = os.environ.get("USS_BENCH_EXECUTOR")
    if chosen:
        if chosen not in EXECUTORS:
            raise LaunchError(f"USS_BENCH_EXECUTOR={chosen!r}: choose one of {', '.join(EXECUTORS)}")
        return chosen
    return "slurm" if slurm_available() else "local"


def _slurm_config() -> dict[str, str]:
    try:
        proc = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                              timeout=_CLUSTER_INFO_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    config = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    return config


def max_array_size() -> int:
    value = _slurm_config().get("MaxArraySize", "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_MAX_ARRAY_SIZE


def partition_gres(partition: str | None) -> dict[str, list[str]]:
    """Node -> gres entries of ``partition`` (the default partition when None)."""
    try:
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N|%P|%G"], capture_output=True, text=True,
                              timeout=_CLUSTER_INFO_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LaunchError(f"cannot ask Slurm for its nodes (sinfo): {exc}") from exc
    if proc.returncode != 0:
        raise LaunchError(f"cannot ask Slurm for its nodes (sinfo): {proc.stderr.strip()}")
    return parse_sinfo_gres(proc.stdout, partition)


def parse_sinfo_gres(text: str, partition: str | None) -> dict[str, list[str]]:
    """Parse ``sinfo -h -N -o '%N|%P|%G'``; the default partition is the one marked ``*``."""
    nodes: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3:
            continue
        node, part, gres = parts
        is_default = part.endswith("*")
        if (partition is None and is_default) or part.rstrip("*") == partition:
            nodes[node] = [] if gres in ("(null)", "") else gres.split(",")
    return nodes


def check_gpus(resources: dict[str, Any], describe: str) -> None:
    """A GPU request on a partition without GPU gres fails here, not as an sbatch error later."""
    wanted = profiles.requested_gpus(resources)
    if not wanted:
        return
    partition = resources.get("partition")
    nodes = partition_gres(partition)
    where = f"partition {partition!r}" if partition else "the default partition"
    if not nodes:
        raise LaunchError(f"{describe}: {where} does not exist on this cluster (sinfo lists no node in it)")
    if not any(any(g.startswith("gpu") for g in gres) for gres in nodes.values()):
        raise LaunchError(
            f"{describe} requests {wanted} GPU(s) per job, but {where} has no GPUs "
            f"(sinfo Gres of its nodes: {', '.join(f'{n}={g or None}' for n, g in nodes.items())}). "
            "Use a CPU profile (e.g. --profile local-ci) or --resource gpus=0."
        )


def check_slurm_request(groups: list[tuple[dict[str, Any], list[Any]]], profile: str | None) -> None:
    """Everything about a Slurm submission that can be refused up front."""
    if not shutil.which("sbatch"):
        raise LaunchError("--executor slurm: sbatch is not on PATH (is this a Slurm login node?)")
    for resources, group in groups:
        source = f"profile {profile!r}" if profile else "its method card's resources (no --profile)"
        check_gpus(resources, f"{group[0].method} with {source}")


# ---------------------------------------------------------------- grouping

def group_by_resources(specs: Sequence[Any], profile: str | None, overrides: dict[str, Any]
                       ) -> list[tuple[dict[str, Any], list[Any]]]:
    """Specs sharing one merged resource set go to one executor (one array), in first-seen order."""
    groups: dict[str, tuple[dict[str, Any], list[Any]]] = {}
    for spec in specs:
        resources = profiles.resolve(spec.method, profile, overrides)
        groups.setdefault(profiles.resources_key(resources), (resources, []))[1].append(spec)
    return list(groups.values())


def chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def absolute_env(env: Any) -> Any:
    """Jobs may start in another directory: make every path of the RunEnv absolute."""
    if isinstance(env, Path):
        return env.expanduser().resolve()
    changes = {}
    for f in dataclasses.fields(env):
        value = getattr(env, f.name)
        if isinstance(value, Path):
            changes[f.name] = value.expanduser().resolve()
    return dataclasses.replace(env, **changes)


# ---------------------------------------------------------------- submitting


def _make_executor(kind: str, folder: Path, resources: dict[str, Any]) -> Any:
    import submitit

    ctor = {}
    if kind == "slurm" and resources.get("max_num_timeout") is not None:
        ctor["slurm_max_num_timeout"] = resources["max_num_timeout"]
    executor = submitit.AutoExecutor(folder=folder, cluster=kind, **ctor)
    params = profiles.to_submitit_parameters(resources)
    if kind == "local":  # slurm_* keys mean nothing here; GPUs are whatever this machine has
        params = {k: v for k, v in params.items() if not k.startswith("slurm_") and k != "gpus_per_node"}
    executor.update_parameters(name="uss-bench", **params)
    return executor


def submit(
    specs: Sequence[Any],
    env: Any,
    executor: str = "slurm",
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    fn: Callable[..., Any] | None = None,
    argv: list[str] | None = None,
) -> tuple[dict[str, Any], list[Any]]:
    """Submit ``specs`` to Slurm (or start them locally); return (manifest, submitit jobs).

    Every check (profile keys, GPUs vs cluster) runs before the first job is queued. ``fn(spec, env)``
    defaults to :class:`SpecJob`; tests pass other module-level callables.
    """
    from uss_bench.launch.jobs import SpecJob

    if executor not in ("local", "slurm"):
        raise LaunchError(f"submit() handles local and slurm executors, not {executor!r}")
    if not specs:
        raise LaunchError("no runs to submit")
    overrides = overrides or {}
    fn = fn or SpecJob()
    env = absolute_env(env)
    groups = group_by_resources(specs, profile, overrides)
    if executor == "slurm":
        check_slurm_request(groups, profile)
        array_cap = min(max_array_size(), *(r.get("max_array_size", 10**9) for r, _ in groups))
    results_dir = env if isinstance(env, Path) else env.results_dir  # a bare Path: jobs that only write records
    manifest = mf.new_manifest(results_dir, executor, profile, argv)
    manifest["timeout_min"] = max((r.get("timeout_min") or 0) for r, _ in groups) if groups else 0
    jobs_dir = Path(manifest["jobs_dir"])
    if executor == "local":
        mf.save(manifest)
        return manifest, []  # local jobs are started by run_local, which throttles them
    # every executor is configured (and its parameters validated) before the first sbatch
    configured = [(_make_executor("slurm", jobs_dir, resources), resources, group) for resources, group in groups]
    jobs: list[Any] = []
    for slurm_ex, resources, group in configured:
        for chunk in chunks(group, array_cap):
            try:
                with slurm_ex.batch():
                    chunk_jobs = [slurm_ex.submit(fn, spec, env) for spec in chunk]
            except Exception as exc:  # sbatch refused: say which profile and what Slurm said
                if jobs:
                    mf.save(manifest)  # the arrays already queued stay visible to `status`
                raise LaunchError(
                    f"sbatch refused an array of {len(chunk)} run(s) with profile {profile!r} "
                    f"({len(jobs)} run(s) were queued before): {exc}"
                ) from exc
            for spec, job in zip(chunk, chunk_jobs):
                mf.add_run(manifest, spec.to_dict(), spec.run_id, str(job.job_id), resources)
            jobs.extend(chunk_jobs)
            mf.save(manifest)  # after every array: a crash mid-sweep still leaves the ids on disk
    return manifest, jobs


def run_local(
    specs: Sequence[Any],
    env: Any,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    fn: Callable[..., Any] | None = None,
    argv: list[str] | None = None,
    timeout_s: float = 7 * 24 * 3600,
    poll_s: float = 1.0,
    on_change: Callable[[dict[str, Any], float], None] | None = None,
) -> dict[str, Any]:
    """Run ``specs`` as submitit local processes, ``array_parallelism`` (default 1) at a time."""
    from uss_bench.launch.jobs import SpecJob

    overrides = overrides or {}
    fn = fn or SpecJob()
    env = absolute_env(env)
    manifest, _ = submit(specs, env, "local", profile, overrides, fn, argv)
    queue = [(resources, spec) for resources, group in group_by_resources(specs, profile, overrides)
             for spec in group]
    running: dict[str, Any] = {}
    start = time.monotonic()
    executors: dict[str, Any] = {}
    while queue or running:
        for job_id, job in list(running.items()):
            if job.done():
                del running[job_id]
        while queue and len(running) < max(1, int(queue[0][0].get("array_parallelism") or 1)):
            resources, spec = queue.pop(0)
            key = profiles.resources_key(resources)
            if key not in executors:
                executors[key] = _make_executor("local", Path(manifest["jobs_dir"]), resources)
            job = executors[key].submit(fn, spec, env)
            running[str(job.job_id)] = job
            mf.add_run(manifest, spec.to_dict(), spec.run_id, str(job.job_id), resources)
            mf.save(manifest)
        snapshot = {jid: ("RUNNING", "") for jid in running}
        if watchdog.refresh(manifest, snapshot, grace_s=2.0) and on_change:
            on_change(manifest, time.monotonic() - start)
        mf.save(manifest)
        if time.monotonic() - start > timeout_s:
            for job in running.values():
                job.cancel(check=False)
            raise LaunchError(f"local sweep {manifest['sweep_id']} did not finish within {timeout_s:.0f} s")
        if queue or running:
            time.sleep(poll_s)
    # processes are gone: whatever has no record or result now failed (grace already covered)
    wait_for(manifest, lambda ids: {}, timeout_s=10.0, poll_s=0.5, grace_s=2.0, on_change=on_change)
    return manifest


def wait_for(
    manifest: dict[str, Any],
    snapshot_fn: Callable[[list[str]], watchdog.Snapshot | None] | None = None,
    timeout_s: float = 24 * 3600,
    poll_s: float = 2.0,
    grace_s: float = 10.0,
    on_change: Callable[[dict[str, Any], float], None] | None = None,
) -> bool:
    """Block until the sweep's runs are all completed/failed or ``timeout_s`` passes."""
    return watchdog.wait(manifest, snapshot_fn or watchdog.squeue_snapshot, timeout_s, poll_s, grace_s,
                         on_change)


def print_progress(manifest: dict[str, Any], elapsed: float) -> None:
    counts = mf.counts(manifest)
    parts = ", ".join(f"{n} {state}" for state, n in counts.items())
    print(f"[{elapsed:6.0f}s] sweep {manifest['sweep_id']}: {parts}", file=sys.stderr, flush=True)
