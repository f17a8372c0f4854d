import shutil
import sys
from pathlib import Path

import cloudpickle
import pytest
import yaml

from uss_bench.cli import main
from uss_bench.launch import executors as ex
from uss_bench.launch import manifest as mf
from uss_bench.launch import profiles
from uss_bench.pipeline import RunEnv
from uss_bench.results.records import load_records, write_record
from uss_bench.spec import RunSpec

# the job callables below travel by value: the job's python cannot import this test module
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def spec(seed: int = 0, method: str = "dino") -> RunSpec:
    return RunSpec(method, "synthetic", "vit-s8", seed=seed, preset="smoke", random_init=True)


def write_seed_record(run_spec: RunSpec, results_dir: Path) -> dict:
    write_record(results_dir, {"run_id": run_spec.run_id, "status": "completed", "spec": run_spec.to_dict(),
                               "metrics": {"cluster": {"acc": float(run_spec.seed)}}})
    return {"run_id": run_spec.run_id}


def test_chunks():
    assert ex.chunks(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    assert ex.chunks(list(range(4)), 1001) == [[0, 1, 2, 3]]
    with pytest.raises(ValueError):
        ex.chunks([1], 0)


def test_one_group_per_distinct_resource_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "big.yaml").write_text(yaml.safe_dump({"resources": {"gpus": 2, "mem_gb": 64}}))
    (tmp_path / "methods" / "small.yaml").write_text(yaml.safe_dump({"resources": {"gpus": 1}}))
    monkeypatch.setenv("USS_BENCH_HOME", str(tmp_path))
    specs = [spec(0, "big"), spec(0, "small"), spec(1, "big"), spec(2, "small")]
    groups = ex.group_by_resources(specs, "local-ci", {"mem_gb": 3})
    # local-ci sets gpus: 0, so both cards collapse to one resource set except for nothing else
    assert len(groups) == 1 and groups[0][0]["gpus"] == 0 and groups[0][0]["mem_gb"] == 3
    groups = ex.group_by_resources(specs, None, {})
    assert [(r, [s.seed for s in g]) for r, g in groups] == [
        ({"gpus": 2, "mem_gb": 64}, [0, 1]), ({"gpus": 1}, [0, 2])]


SINFO = "vm|debug*|(null)\ng1|gpu|gpu:a100:4\ng2|gpu|gpu:a100:4,tmpdisk:100\nc1|cpu|(null)\n"


def test_parse_sinfo_gres():
    assert ex.parse_sinfo_gres(SINFO, None) == {"vm": []}
    assert ex.parse_sinfo_gres(SINFO, "gpu") == {"g1": ["gpu:a100:4"], "g2": ["gpu:a100:4", "tmpdisk:100"]}
    assert ex.parse_sinfo_gres(SINFO, "nope") == {}


def test_gpu_request_on_a_gpu_less_partition_is_refused(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ex, "partition_gres", lambda p: ex.parse_sinfo_gres(SINFO, p))
    ex.check_gpus({"gpus": 0}, "x")
    ex.check_gpus({"gpus": 2, "partition": "gpu"}, "x")
    with pytest.raises(ex.LaunchError, match=r"requests 1 GPU\(s\) per job, but the default partition has no"):
        ex.check_gpus({"gpus": 1}, "profile example-gpu for hp")
    with pytest.raises(ex.LaunchError, match="partition 'cpu' has no GPUs"):
        ex.check_gpus({"gres": "gpu:1", "partition": "cpu"}, "x")
    with pytest.raises(ex.LaunchError, match="does not exist"):
        ex.check_gpus({"gpus": 1, "partition": "nope"}, "x")


def test_default_executor(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("USS_BENCH_EXECUTOR", raising=False)
    monkeypatch.setattr(ex, "slurm_available", lambda: False)
    assert ex.default_executor() == "local"
    monkeypatch.setattr(ex, "slurm_available", lambda: True)
    assert ex.default_executor() == "slurm"
    monkeypatch.setenv("USS_BENCH_EXECUTOR", "inline")
    assert ex.default_executor() == "inline"
    monkeypatch.setenv("USS_BENCH_EXECUTOR", "cloud")
    with pytest.raises(ex.LaunchError, match="choose one of inline, local, slurm"):
        ex.default_executor()


def test_absolute_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    env = ex.absolute_env(RunEnv(results_dir=Path("res"), data_root=Path("data"), weights_dir=None))
    assert env.results_dir == tmp_path / "res" and env.data_root == tmp_path / "data" and env.weights_dir is None


@pytest.mark.skipif(shutil.which("srun") is None, reason="submitit's Slurm executor needs srun on PATH")
@pytest.mark.parametrize("name", ["local-ci", "example-gpu", "cpu"])
def test_submitit_accepts_every_profile(name: str, tmp_path: Path):
    executor = ex._make_executor("slurm", tmp_path, profiles.load_profile(name))
    params = executor._executor.parameters
    assert params["ntasks_per_node"] == 1 and params["job_name"] == "uss-bench"
    if name == "example-gpu":
        assert params["gpus_per_node"] == 1 and params["additional_parameters"] == {"exclude": "node-bad-01"}
        assert executor._executor.max_num_timeout == 3


def test_run_local_runs_everything_and_writes_a_manifest(tmp_path: Path):
    specs = [spec(i) for i in range(3)]
    manifest = ex.run_local(specs, tmp_path, "local-ci", {"array_parallelism": 2}, fn=write_seed_record,
                            timeout_s=120, poll_s=0.2)
    assert mf.counts(manifest) == {"completed": 3}
    assert sorted(r["metrics"]["cluster"]["acc"] for r in load_records(tmp_path)) == [0.0, 1.0, 2.0]
    assert mf.find(tmp_path)["executor"] == "local"


def test_run_cli_rejects_unknown_profile_and_bad_override(tmp_path: Path, capsys):
    base = ["run", "--methods", "dino", "--datasets", "synthetic", "--preset", "smoke", "--results", str(tmp_path)]
    assert main(base + ["--executor", "slurm", "--profile", "nope"]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err
    assert main(base + ["--executor", "slurm", "--resource", "memory=4"]) == 2
    assert "valid keys: description, partition" in capsys.readouterr().err
    assert not (tmp_path / "sweeps").exists()


def test_job_pickle_is_small_and_refers_to_module_level_code(tmp_path: Path):
    from submitit.helpers import DelayedSubmission

    from uss_bench.launch.jobs import SpecJob

    env = ex.absolute_env(RunEnv(results_dir=tmp_path, data_root=tmp_path, weights_dir=None))
    payload = cloudpickle.dumps(DelayedSubmission(SpecJob(), spec(3), env))
    assert len(payload) < 2048  # a spec and an env, never a model or a dataset
    assert b"uss_bench.launch.jobs" in payload and b"SpecJob" in payload  # by reference, not by value
    again = SpecJob().checkpoint(spec(3), env)  # what submitit re-pickles on preemption / timeout
    assert isinstance(again, DelayedSubmission) and again.args == (spec(3), env)
