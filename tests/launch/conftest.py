"""The local Slurm for tests: started once per session by slurm/local-cluster.sh.

With USS_BENCH_REQUIRE_SLURM=1 (set in CI) a missing or unstartable Slurm fails the Slurm tests;
otherwise they skip with the reason. SLURM_CONF is set per test (monkeypatch), never for the whole
session, so other test modules do not suddenly see a cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from uss_bench.paths import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "slurm" / "local-cluster.sh"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo")


def _unavailable(reason: str) -> None:
    if os.environ.get("USS_BENCH_REQUIRE_SLURM") == "1":
        pytest.fail(f"USS_BENCH_REQUIRE_SLURM=1 but {reason}", pytrace=False)
    pytest.skip(f"no local Slurm: {reason} (set USS_BENCH_REQUIRE_SLURM=1 to make this a failure)")


@pytest.fixture(scope="session")
def slurm_cluster() -> dict[str, str]:
    """Start (or reuse) the private cluster; yields the env Slurm clients need."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        _unavailable(f"Slurm/munge binaries missing: {', '.join(missing)} (apt-get install slurm-wlm munge)")
    slurm_dir = Path(os.environ.get("USS_BENCH_SLURM_DIR", "/tmp/uss-bench-slurm"))
    was_running = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode == 0
    try:
        proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        _unavailable("slurm/local-cluster.sh start did not return within 180 s")
    if proc.returncode != 0:
        _unavailable(f"slurm/local-cluster.sh start failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}")
    yield {"SLURM_CONF": str(slurm_dir / "slurm.conf")}
    if not was_running:  # leave a cluster somebody else started alone
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=120)


@pytest.fixture
def slurm_env(slurm_cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """SLURM_CONF for this test (in-process calls) and a full environment for CLI subprocesses."""
    for key, value in slurm_cluster.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **slurm_cluster}
