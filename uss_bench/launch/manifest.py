"""Sweep manifest: what was submitted, where, as which jobs; the file `status` and `collect` read.

Layout: ``<results_dir>/sweeps/<sweep_id>/manifest.json`` with submitit's job files beside it in
``jobs/``. Written atomically, so a reader never sees half a manifest.

On disk the directories are relative to the results directory (``sweeps/<id>``, ``sweeps/<id>/jobs``),
so a copied or moved results directory keeps working: ``collect --results COPY`` writes into COPY. In
memory they are absolute, resolved from where the manifest was read. Manifests written with absolute
paths (before this rule) are read the same way: their location wins over the stored paths.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from uss_bench.paths import PROJECT_ROOT
from uss_bench.results.records import atomic_write_text

MANIFEST_NAME = "manifest.json"
# "skipped": the job found another process computing the same run (its lock) and did nothing
TERMINAL_STATES = ("completed", "failed", "skipped")
# every state a run can be in, in the order status tables list them
RUN_STATES = ("submitted", "pending", "running", "requeued", "completed", "failed", "skipped", "unknown")


def git_sha(root: Path = PROJECT_ROOT) -> str | None:
    """HEAD of the checkout the jobs import (None outside git or before the first commit)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def sweeps_dir(results_dir: str | Path) -> Path:
    return Path(results_dir) / "sweeps"


def new_sweep_id() -> str:
    # sortable by time; the random tail keeps two sweeps started in the same second apart
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def new_manifest(
    results_dir: str | Path, executor: str, profile: str | None, argv: list[str] | None = None
) -> dict[str, Any]:
    sweep_id = new_sweep_id()
    sweep_dir = (sweeps_dir(results_dir) / sweep_id).resolve()
    return {
        "sweep_id": sweep_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "executor": executor,
        "profile": profile,
        "results_dir": str(Path(results_dir).resolve()),
        "sweep_dir": str(sweep_dir),
        "jobs_dir": str(sweep_dir / "jobs"),
        "git_sha": git_sha(),
        "argv": list(argv or []),
        "runs": [],
    }


def add_run(
    manifest: dict[str, Any], spec: dict[str, Any], run_id: str, job_id: str | None, resources: dict[str, Any]
) -> dict[str, Any]:
    entry = {
        "run_id": run_id,
        "spec": spec,
        "job_id": job_id,
        "resources": resources,
        "state": "submitted",
        "submitted_at": time.time(),
        "scheduler_state": None,
        "error": None,
    }
    manifest["runs"].append(entry)
    return entry


def manifest_path(manifest: dict[str, Any]) -> Path:
    return Path(manifest["sweep_dir"]) / MANIFEST_NAME


def _on_disk(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its directories relative to the results directory."""
    root = Path(manifest["results_dir"])
    out = dict(manifest, results_dir=".")
    for key in ("sweep_dir", "jobs_dir"):
        path = Path(manifest[key])
        if path.is_relative_to(root):  # else a hand-made path outside the results directory: kept as given
            out[key] = path.relative_to(root).as_posix()
    return out


def _in_memory(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Absolute directories for a manifest read from ``path`` (new relative or old absolute form)."""
    sweep_dir = path.parent.absolute()
    stored = Path(data.get("sweep_dir") or sweep_dir)
    if not stored.is_absolute():
        results = sweep_dir
        for _ in stored.parts:
            results = results.parent
    elif sweep_dir.parent.name == "sweeps":  # an old absolute manifest: trust where it lies, not what it says
        results = sweep_dir.parent.parent
        data = dict(data, jobs_dir=str(sweep_dir / "jobs"))
    else:
        return data
    jobs = Path(data.get("jobs_dir") or "jobs")
    return dict(data, results_dir=str(results), sweep_dir=str(sweep_dir),
                jobs_dir=str(jobs if jobs.is_absolute() else results / jobs))


def save(manifest: dict[str, Any]) -> Path:
    path = manifest_path(manifest)
    atomic_write_text(path, json.dumps(_on_disk(manifest), indent=2, sort_keys=True, default=str) + "\n")
    return path


def load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        with open(path) as fh:
            data = json.load(fh)
        if not isinstance(data, dict) or "runs" not in data:
            raise ValueError(f"corrupt sweep manifest {path}: not a manifest (no runs)")
        return _in_memory(data, path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no sweep manifest at {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"corrupt sweep manifest {path}: {exc}") from exc


def list_sweeps(results_dir: str | Path) -> list[Path]:
    """Sweep directories holding a manifest, oldest first (ids sort by creation time)."""
    root = sweeps_dir(results_dir)
    return sorted(p.parent for p in root.glob(f"*/{MANIFEST_NAME}"))


def find(results_dir: str | Path, sweep: str | None = None) -> dict[str, Any]:
    """The sweep named ``sweep`` (id, directory or manifest path); the newest one when None."""
    if sweep:
        candidate = Path(sweep)
        if candidate.exists():
            return load(candidate)
        by_id = sweeps_dir(results_dir) / sweep
        if (by_id / MANIFEST_NAME).is_file():
            return load(by_id)
        known = ", ".join(p.name for p in list_sweeps(results_dir)[-5:]) or "none"
        raise FileNotFoundError(f"no sweep {sweep!r} under {sweeps_dir(results_dir)} (latest: {known})")
    sweeps = list_sweeps(results_dir)
    if not sweeps:
        raise FileNotFoundError(f"no sweeps under {sweeps_dir(results_dir)}; submit one with `uss-bench run`")
    return load(sweeps[-1])


def counts(manifest: dict[str, Any]) -> dict[str, int]:
    out = {state: 0 for state in RUN_STATES}
    for run in manifest["runs"]:
        out[run["state"]] = out.get(run["state"], 0) + 1
    return {k: v for k, v in out.items() if v}


def is_finished(manifest: dict[str, Any]) -> bool:
    return all(run["state"] in TERMINAL_STATES for run in manifest["runs"])
