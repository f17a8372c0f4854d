"""Real jobs on the local single-node Slurm (slurm/local-cluster.sh, started by conftest.py).

Each test submits through ``uss-bench run --executor slurm --profile local-ci`` or the executor API
and waits with a bound; the whole module takes a few minutes on 2 cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest

from uss_bench.cli import main
from uss_bench.launch import executors as ex
from uss_bench.launch import manifest as mf
from uss_bench.pipeline import RunEnv
from uss_bench.results.records import load_record, load_records, write_record
from uss_bench.spec import RunSpec

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # job callables below travel by value

SMOKE = ["--methods", "dino", "--datasets", "synthetic", "--preset", "smoke"]
CI = ["--executor", "slurm", "--profile", "local-ci", "--poll", "1"]


def smoke_spec(seed: int, **overrides) -> RunSpec:
    return RunSpec("dino", "synthetic", "vit-s8", seed=seed, preset="smoke", random_init=True,
                   overrides=overrides)


# ---------------------------------------------------------------- job callables (module level)


def die_without_result(run_spec: RunSpec, env: RunEnv) -> None:
    print(f"run {run_spec.run_id}: about to die without a result", file=sys.stderr, flush=True)
    os._exit(3)


def write_seed_record(run_spec: RunSpec, results_dir: Path) -> dict:
    write_record(results_dir, {
        "run_id": run_spec.run_id, "status": "completed", "spec": run_spec.to_dict(),
        "metrics": {"cluster": {"acc": float(run_spec.seed), "miou": run_spec.seed / 4}},
        "job": os.environ.get("SLURM_ARRAY_JOB_ID") + "_" + os.environ.get("SLURM_ARRAY_TASK_ID", "?"),
    })
    return {"run_id": run_spec.run_id}


# ---------------------------------------------------------------- tests


def test_done_command_produces_its_record(slurm_env, tmp_path: Path, capsys):
    """The issue's acceptance command, verbatim, on the local Slurm."""
    rc = main(["run", *SMOKE, "--executor", "slurm", "--profile", "local-ci", "--wait", "--results", str(tmp_path)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    (record,) = load_records(tmp_path)
    assert record["status"] == "completed" and record["run_id"] == smoke_spec(0).run_id
    assert record["environment"]["host"] and 0 <= record["metrics"]["cluster"]["miou"] <= 100
    assert "| dino" in out.out and "completed" in out.out


def test_array_of_smoke_runs_all_records_arrive(slurm_env, tmp_path: Path, capsys):
    rc = main(["run", *SMOKE, "--seeds", "1,2,3", *CI, "--resource", "max_array_size=2", "--wait",
               "--timeout", "240", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 0, err
    manifest = mf.find(tmp_path)
    assert len({r["job_id"].split("_")[0] for r in manifest["runs"]}) == 2  # 3 runs, arrays of <= 2
    assert mf.counts(manifest) == {"completed": 3}
    records = load_records(tmp_path)
    assert sorted(r["spec"]["seed"] for r in records) == [1, 2, 3]
    assert all(r["status"] == "completed" for r in records)
    # submit and collect are separate commands reading the manifest
    assert main(["status", "--results", str(tmp_path)]) == 0
    status = capsys.readouterr().out
    assert status.count("completed") >= 3 and manifest["sweep_id"] in status
    assert main(["collect", manifest["sweep_id"], "--results", str(tmp_path)]) == 0
    assert "3 record(s) collected (3 completed, 0 failed); 0 run(s) not finished" in capsys.readouterr().err


def test_submit_returns_at_once_then_status_and_collect(slurm_env, tmp_path: Path, capsys):
    start = time.monotonic()
    assert main(["run", *SMOKE, "--seeds", "4", *CI, "--results", str(tmp_path)]) == 0
    assert time.monotonic() - start < 15  # did not wait for the ~10 s job
    assert "follow with `uss-bench status" in capsys.readouterr().err
    manifest = mf.find(tmp_path)
    assert manifest["runs"][0]["state"] == "submitted" and manifest["executor"] == "slurm"
    assert ex.wait_for(manifest, timeout_s=180, poll_s=1)
    assert main(["collect", "--results", str(tmp_path)]) == 0


def test_job_dying_without_result_is_failed_in_bounded_time_then_retried(slurm_env, tmp_path: Path, capsys):
    run_spec = smoke_spec(7)
    env = RunEnv(results_dir=tmp_path, data_root=tmp_path / "data", weights_dir=None)
    manifest, _ = ex.submit([run_spec], env, "slurm", "local-ci", fn=die_without_result)
    start = time.monotonic()
    assert ex.wait_for(manifest, timeout_s=120, poll_s=1, grace_s=5)
    elapsed = time.monotonic() - start
    (run,) = manifest["runs"]
    assert run["state"] == "failed" and elapsed < 60
    assert "ended (FAILED, exit code 3:0) without a result" in run["error"]
    assert "about to die without a result" in run["error"]  # the tail of its stderr
    record = load_record(tmp_path, run_spec.run_id)
    assert record["status"] == "failed" and record["error"]["type"] == "JobDiedWithoutResult"

    assert main(["status", "--errors", "--results", str(tmp_path)]) == 0
    assert "about to die" in capsys.readouterr().out
    # the job died (not bad input): a plain re-run submits it again, saying so (now the real job)
    base = ["run", *SMOKE, "--seeds", "7", *CI, "--wait", "--timeout", "180", "--results", str(tmp_path)]
    assert main(base) == 0
    assert f"retrying 1 run(s) that failed before: {run_spec.run_id} (JobDiedWithoutResult: job " in (
        capsys.readouterr().err)
    assert load_record(tmp_path, run_spec.run_id)["status"] == "completed"


def test_run_raising_in_the_job_is_reported_failed_not_completed(slurm_env, tmp_path: Path, capsys):
    """An error only the job can meet (a corrupt image the preflight sample did not decode) fails the run."""
    from uss_bench.data.fixtures import write_fixture

    write_fixture("synthetic", tmp_path / "data")
    (image,) = (tmp_path / "data" / "synthetic").glob("*/images/val/00001.png")  # not in preflight's sample
    image.write_bytes(image.read_bytes()[:100])
    rc = main(["run", *SMOKE, *CI, "--wait", "--timeout", "120", "--data-root", str(tmp_path / "data"),
               "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"DatasetError: corrupt or truncated image {image}" in err
    (run,) = mf.find(tmp_path / "results")["runs"]
    assert run["state"] == "failed" and run["error"].startswith("DatasetError: corrupt or truncated image")


def test_fifty_concurrent_tasks_write_records_none_lost(slurm_env, tmp_path: Path):
    specs = [smoke_spec(i) for i in range(50)]
    # little memory and --oversubscribe let all 50 tasks share the two cores: truly concurrent writers
    overrides = {"mem_gb": 0.1, "array_parallelism": 50, "sbatch": {"oversubscribe": True}}
    manifest, _ = ex.submit(specs, tmp_path, "slurm", "local-ci", overrides, fn=write_seed_record)
    (array_id,) = {r["job_id"].split("_")[0] for r in manifest["runs"]}  # one array of 50
    script = (Path(manifest["jobs_dir"]) / f"{array_id}_submission.sh").read_text()
    assert "#SBATCH --array=0-49%50" in script and "#SBATCH --oversubscribe" in script
    assert ex.wait_for(manifest, timeout_s=240, poll_s=1, grace_s=5)
    assert mf.counts(manifest) == {"completed": 50}
    records = load_records(tmp_path)  # raises on any corrupt file
    assert len(records) == 50
    assert sorted(r["metrics"]["cluster"]["acc"] for r in records) == [float(i) for i in range(50)]
    assert all(r["metrics"]["cluster"]["miou"] == r["spec"]["seed"] / 4 for r in records)
    assert not [p for p in (tmp_path / "runs").iterdir() if not p.name.endswith(".json")]  # no temp files


def test_gpu_request_on_gpu_less_cluster_fails_before_submission(slurm_env, tmp_path: Path, capsys):
    jobs_before = _job_count()
    rc = main(["run", *SMOKE, "--executor", "slurm", "--profile", "local-ci", "--resource", "gpus=1",
               "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "requests 1 GPU(s) per job, but partition 'debug' has no GPUs" in err
    assert _job_count() == jobs_before and not (tmp_path / "sweeps").exists()


def test_missing_dataset_fails_before_any_job_is_queued(slurm_env, tmp_path: Path, capsys):
    from uss_bench.registry import DATASETS

    real = [name for name in DATASETS.names() if name != "synthetic"]
    if not real:
        pytest.skip("no file-backed dataset is registered yet")
    jobs_before = _job_count()
    rc = main(["run", "--methods", "dino", "--datasets", real[0], *CI, "--data-root", str(tmp_path / "none"),
               "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "inputs are missing" in err and str(tmp_path / "none") in err
    assert _job_count() == jobs_before and not (tmp_path / "sweeps").exists()


def test_missing_weights_fail_before_any_job_is_queued(slurm_env, tmp_path: Path, capsys, monkeypatch):
    """Whatever preflight reports (here: weights) stops `run` before the executor is even chosen."""
    import uss_bench.pipeline as runner

    missing = f"missing DINO weights: {tmp_path}/dino_deitsmall8_pretrain.pth (download it from ...)"
    monkeypatch.setattr(runner, "preflight", lambda specs, env: [missing])
    jobs_before = _job_count()
    rc = main(["run", *SMOKE, *CI, "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and missing in err
    assert _job_count() == jobs_before and not (tmp_path / "sweeps").exists()


def test_requeued_training_resumes_and_ends_with_the_same_metrics(slurm_env, tmp_path: Path, capsys):
    """Two identical runs on Slurm; one gets the preemption signal after its first checkpoint."""
    train = ["--set", "train.steps=120", "--checkpoint-every", "10"]
    plain, interrupted = tmp_path / "plain", tmp_path / "interrupted"
    for results in (plain, interrupted):
        assert main(["run", *SMOKE, "--seeds", "11", *CI, *train, "--results", str(results)]) == 0
    capsys.readouterr()
    sweep_a, sweep_b = mf.find(plain), mf.find(interrupted)
    (run_b,) = sweep_b["runs"]
    checkpoint = interrupted / "checkpoints" / run_b["run_id"] / "last.pt"
    deadline = time.monotonic() + 180
    while not checkpoint.is_file():
        assert time.monotonic() < deadline, "no training checkpoint appeared within 180 s"
        time.sleep(0.5)
    # what Slurm sends before preemption / the time limit; submitit checkpoints and requeues
    subprocess.run(["scancel", "--signal=USR2", run_b["job_id"]], check=True, env=slurm_env)
    assert ex.wait_for(sweep_b, timeout_s=300, poll_s=1)
    assert ex.wait_for(sweep_a, timeout_s=120, poll_s=1)
    rec_a, rec_b = load_record(plain, run_b["run_id"]), load_record(interrupted, run_b["run_id"])
    assert rec_a["status"] == rec_b["status"] == "completed"
    assert rec_a["train"]["resumed_from"] is None
    assert rec_b["train"]["resumed_from"] >= 10  # really resumed from a checkpoint, not from scratch
    log = (Path(sweep_b["jobs_dir"]) / f"{run_b['job_id']}_0_log.err").read_text()
    assert "Caught signal SIGUSR2" in log and "DUE TO JOB REQUEUE" in log
    assert rec_b["metrics"] == rec_a["metrics"]
    assert rec_b["train"]["last_losses"] == rec_a["train"]["last_losses"]


def _job_count() -> int:
    out = subprocess.run(["squeue", "-t", "all", "-h", "-o", "%i"], capture_output=True, text=True, check=True)
    return len(out.stdout.split())


def test_a_slurm_job_holds_its_run_lock_with_its_job_id(slurm_env, tmp_path: Path, capsys, monkeypatch):
    """The lock label names the array task; a re-run meanwhile submits nothing; a job finding the lock
    taken does nothing and is reported skipped."""
    import fake_training

    from uss_bench.results.locks import holder_of, run_lock

    cloudpickle.register_pickle_by_value(fake_training)
    hold = tmp_path / "go"
    for key, value in {"FAKE_STEPS": "1", "FAKE_STEP_S": "0", "FAKE_HOLD_FILE": str(hold)}.items():
        monkeypatch.setenv(key, value)  # sbatch exports this environment to the job
    run_spec = smoke_spec(0)
    env = RunEnv(results_dir=tmp_path, data_root=tmp_path / "data", weights_dir=None)
    manifest, _ = ex.submit([run_spec], env, "slurm", "local-ci", fn=fake_training.FakeSpecJob())
    (run,) = manifest["runs"]
    deadline = time.monotonic() + 120
    while (holder := holder_of(tmp_path, run_spec.run_id)) is None:
        assert time.monotonic() < deadline, "the job never took the run's lock"
        time.sleep(0.5)
    assert holder["job_id"] == run["job_id"]
    jobs_before = _job_count()
    assert main(["run", *SMOKE, *CI, "--results", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert f"is already running (pid {holder['pid']} on {holder['host']} / job id {run['job_id']}" in err
    assert _job_count() == jobs_before
    hold.touch()
    assert ex.wait_for(manifest, timeout_s=120, poll_s=1, grace_s=5)
    assert mf.counts(manifest) == {"completed": 1}

    record_path = tmp_path / "runs" / f"{run_spec.run_id}.json"
    record_path.unlink()
    with run_lock(tmp_path, run_spec.run_id):  # this process "computes" the run now
        manifest, _ = ex.submit([run_spec], env, "slurm", "local-ci", fn=fake_training.FakeSpecJob())
        assert ex.wait_for(manifest, timeout_s=120, poll_s=1, grace_s=5)
    (run,) = manifest["runs"]
    assert run["state"] == "skipped" and f"already running (pid {os.getpid()}" in run["error"]
    assert not record_path.exists()  # the skipped job wrote nothing
