"""Cluster resource profiles: method card resources, then ``slurm/profiles/<name>.yaml``, then CLI overrides.

A profile is a flat YAML mapping with the keys of :data:`PROFILE_KEYS`. The merged result is turned into
submitit parameters by :func:`to_submitit_parameters`. Unknown keys are an error listing the valid ones,
so a typo never silently drops a resource request.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from uss_bench.paths import PROJECT_ROOT, cards_dir

# key -> (accepted types, submitit parameter or None when the harness itself consumes it, help)
PROFILE_KEYS: dict[str, tuple[tuple[type, ...], str | None, str]] = {
    "description": ((str,), None, "free text shown by `uss-bench status`"),
    "partition": ((str,), "slurm_partition", "Slurm partition"),
    "account": ((str,), "slurm_account", "Slurm account to charge"),
    "qos": ((str,), "slurm_qos", "Slurm quality of service"),
    "constraint": ((str,), "slurm_constraint", "node features, e.g. a100"),
    "gpus": ((int,), "gpus_per_node", "GPUs per job, on one node (0 = CPU only)"),
    "gres": ((str,), "slurm_gres", "raw --gres string, e.g. gpu:a100:1"),
    "cpus_per_task": ((int,), "cpus_per_task", "CPU cores per job"),
    "mem_gb": ((int, float), "mem_gb", "memory per job in GB"),
    "timeout_min": ((int,), "timeout_min", "wall-clock limit in minutes"),
    "array_parallelism": ((int,), "slurm_array_parallelism", "max tasks of one array running at once"),
    "max_array_size": ((int,), None, "cap on tasks per array (default: the cluster's MaxArraySize)"),
    "signal_delay_s": ((int,), "slurm_signal_delay_s", "seconds before the time limit that USR2 is sent"),
    # an AutoExecutor constructor argument, not a parameter: see executors._make_executor
    "max_num_timeout": ((int,), None, "how often a timed-out job is requeued"),
    "setup": ((list,), "slurm_setup", "shell lines run before the job (module load, venv activate)"),
    "sbatch": ((dict,), "slurm_additional_parameters", "extra sbatch parameters, e.g. {exclude: node7}"),
}

GPU_KEYS = ("gpus", "gres")


class ProfileError(ValueError):
    """A bad profile, card resources block or override; the message names the source."""


def profiles_dir() -> Path:
    """``slurm/profiles`` beside the package (override with USS_BENCH_PROFILES)."""
    return Path(os.environ.get("USS_BENCH_PROFILES", PROJECT_ROOT / "slurm" / "profiles"))


def available_profiles() -> list[str]:
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


def validate(resources: dict[str, Any], source: str) -> dict[str, Any]:
    """Check keys and value types; return a copy. ``source`` names the file or flag in errors."""
    if not isinstance(resources, dict):
        raise ProfileError(f"{source}: expected a mapping of resource keys, got {type(resources).__name__}")
    unknown = sorted(set(resources) - set(PROFILE_KEYS))
    if unknown:
        raise ProfileError(
            f"{source}: unknown resource key(s) {', '.join(unknown)}; valid keys: {', '.join(PROFILE_KEYS)}"
        )
    for key, value in resources.items():
        types = PROFILE_KEYS[key][0]
        # bool is an int subclass; `gpus: yes` is a typo, not one GPU
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            names = " or ".join(t.__name__ for t in types)
            raise ProfileError(f"{source}: {key} must be {names}, got {value!r}")
    if isinstance(resources.get("setup"), list) and not all(isinstance(s, str) for s in resources["setup"]):
        raise ProfileError(f"{source}: setup must be a list of shell lines (strings)")
    return {k: v for k, v in resources.items() if v is not None}


def read_yaml(path: Path) -> Any:
    """``yaml.safe_load`` of a file; a syntax error is one ProfileError naming the file and the line."""
    try:
        with open(path) as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ProfileError(f"{where}: not valid YAML ({problem})") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read ({exc.strerror or exc})") from None


def load_profile(name: str) -> dict[str, Any]:
    import difflib

    path = profiles_dir() / f"{name}.yaml"
    if not path.is_file():
        known = available_profiles()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"did you mean: {', '.join(close)}? " if close else ""
        raise ProfileError(f"unknown profile {name!r}: no file {path} ({hint}available: {', '.join(known) or 'none'})")
    return validate(read_yaml(path) or {}, str(path))


def card_resources(method: str) -> dict[str, Any]:
    """The ``resources:`` block of ``methods/<method>.yaml``; {} when the card has none."""
    path = cards_dir("methods") / f"{method}.yaml"
    if not path.is_file():
        return {}
    card = read_yaml(path) or {}
    return validate(card.get("resources") or {}, f"{path} (resources)")


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["mem_gb=32", "partition=gpu"]`` -> dict; values are read as YAML (numbers, lists, maps)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ProfileError(f"--resource {item!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return validate(out, "--resource")


def merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Later layers win; ``sbatch`` maps merge key by key."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key == "sbatch" and isinstance(merged.get("sbatch"), dict):
                merged["sbatch"] = {**merged["sbatch"], **value}
            else:
                merged[key] = value
    return merged


def resolve(method: str, profile: str | None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Card resources of ``method`` <- profile ``profile`` <- CLI overrides."""
    return merge(card_resources(method), load_profile(profile) if profile else {}, overrides or {})


def resources_key(resources: dict[str, Any]) -> str:
    """Canonical form: specs with equal keys share one executor (one job array)."""
    return json.dumps(resources, sort_keys=True, default=str)


def requested_gpus(resources: dict[str, Any]) -> int:
    """GPUs asked for through ``gpus`` or a ``gpu[:type]:N`` gres entry."""
    gpus = int(resources.get("gpus") or 0)
    for entry in str(resources.get("gres") or "").split(","):
        parts = entry.strip().split(":")
        if parts[0] == "gpu":
            gpus = max(gpus, int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1)
    return gpus


def to_submitit_parameters(resources: dict[str, Any]) -> dict[str, Any]:
    """Merged resources -> keyword arguments for ``AutoExecutor.update_parameters``."""
    params: dict[str, Any] = {"nodes": 1, "tasks_per_node": 1}
    for key, value in resources.items():
        target = PROFILE_KEYS[key][1]
        # `--gpus-per-node=0` is itself rejected by clusters without GPU gres: leave it out
        if target is not None and not (key == "gpus" and value == 0):
            params[target] = value
    return params
