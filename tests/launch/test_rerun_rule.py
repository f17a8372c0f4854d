"""What a re-run does with corrupt records, failed runs and runs another process is computing.

`uss-bench run` goes through the real CLI, run plan, lock and record store; only the training itself is
replaced by ``fake_training.fake_execute`` (a few logged "steps", then a completed record), so each test
takes seconds. The local-executor test runs real submitit processes with the same fake.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import platform
import shutil
import sys
from pathlib import Path

import cloudpickle
import fake_training
import pytest

import uss_bench.launch.jobs as jobs
import uss_bench.pipeline.execute as execute
from uss_bench.cli import main
from uss_bench.launch import manifest as mf
from uss_bench.pipeline.plan import plan_runs
from uss_bench.results.locks import run_lock
from uss_bench.results.records import load_record, record_path, write_record
from uss_bench.spec import RunSpec

cloudpickle.register_pickle_by_value(fake_training)  # the local jobs cannot import the tests
REAL_EXECUTE = execute._execute
SPEC = RunSpec("dino", "synthetic", "vit-s8", seed=0, preset="smoke", random_init=True)


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(execute, "_execute", fake_training.fake_execute)
    monkeypatch.setattr(jobs, "SpecJob", fake_training.FakeSpecJob)
    monkeypatch.setenv("FAKE_STEPS", "1")
    monkeypatch.setenv("FAKE_STEP_S", "0")
    return tmp_path / "results"


def run_args(results: Path, *extra: str, executor: str = "inline") -> list[str]:
    return ["run", "--methods", "dino", "--datasets", "synthetic", "--preset", "smoke", "--executor", executor,
            "--results", str(results), "--data-root", str(results.parent / "data"), *extra]


def failed_record(results: Path, error_type: str, message: str, cause: str | None) -> Path:
    error = {"type": error_type, "message": message, "traceback": "..."}
    if cause:
        error["cause"] = cause
    return write_record(results, {"run_id": SPEC.run_id, "spec": SPEC.to_dict(), "status": "failed", "error": error})


def starts(results: Path) -> int:
    log = results / "fake_steps.log"
    return log.read_text().count("step 1/") if log.exists() else 0


@pytest.mark.parametrize("force", [False, True])
def test_corrupt_record_is_moved_aside_and_the_run_computed_again(results: Path, capsys, force: bool):
    path = record_path(results, SPEC.run_id)
    path.parent.mkdir(parents=True)
    path.write_text('{"run_id": "x", "status": "compl')  # a record cut off mid-write
    assert main(run_args(results, *(["--force"] if force else []))) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [ln for ln in err.splitlines() if "corrupt run record" in ln]
    assert line == f"corrupt run record {path}; moved it to {path}.corrupt and the run is computed again"
    assert Path(f"{path}.corrupt").read_text() == '{"run_id": "x", "status": "compl'
    assert load_record(results, SPEC.run_id)["status"] == "completed" and starts(results) == 1


def test_failure_of_the_run_itself_is_retried_and_named(results: Path, capsys):
    failed_record(results, "OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB", "run")
    assert main(run_args(results)) == 0
    err = capsys.readouterr().err
    assert (f"retrying 1 run(s) that failed before: {SPEC.run_id} (OutOfMemoryError: CUDA out of memory. "
            "Tried to allocate 2.00 GiB)") in err
    assert load_record(results, SPEC.run_id)["status"] == "completed" and starts(results) == 1


def test_failure_on_bad_input_is_skipped_until_retry_failed(results: Path, capsys):
    # an old record without "cause": classified by its error type
    path = failed_record(results, "DatasetError", "cannot read image file /data/x.jpg: truncated", None)
    before = path.read_bytes()
    assert main(run_args(results)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (f"1 run(s) failed on bad input before: skipped until the input is fixed (--retry-failed runs them "
            f"again): {SPEC.run_id} (DatasetError: cannot read image file /data/x.jpg: truncated)") in err
    assert path.read_bytes() == before and starts(results) == 0  # nothing ran, nothing written
    assert main(run_args(results, "--retry-failed")) == 0
    assert load_record(results, SPEC.run_id)["status"] == "completed" and starts(results) == 1


def test_the_failed_record_says_what_caused_it(results: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    from uss_bench.data.base import DatasetError

    monkeypatch.setattr(execute, "_execute", REAL_EXECUTE)  # the real failure path writes the record
    for exc, cause in ((DatasetError("cannot read image file x.jpg"), "input"), (RuntimeError("nan loss"), "run")):
        def broken(spec, exc=exc):
            raise exc

        monkeypatch.setattr(execute, "resolve", broken)  # the first step inside the run
        assert main(run_args(results, "--retry-failed")) == 1
        error = load_record(results, SPEC.run_id)["error"]
        assert (error["type"], error["cause"]) == (type(exc).__name__, cause)
    capsys.readouterr()


def _hold(results_dir: str, run_id: str, ready, release) -> None:
    with run_lock(results_dir, run_id):
        ready.set()
        release.wait(120)


def test_a_run_another_process_computes_is_skipped_with_its_pid(results: Path, capsys):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold, args=(str(results), SPEC.run_id, ready, release))
    other.start()
    try:
        assert ready.wait(60)
        for executor in ("inline", "local"):
            assert main(run_args(results, executor=executor)) == 3
            err = capsys.readouterr().err
            assert "Traceback" not in err
            assert (f"run {SPEC.run_id} (dino/synthetic/vit-s8/seed0/uss/smoke) is already running "
                    f"(pid {other.pid} on {platform.node()}") in err
            assert not record_path(results, SPEC.run_id).exists() and starts(results) == 0
    finally:
        release.set()
        other.join(10)
    assert main(run_args(results)) == 0 and starts(results) == 1


def test_local_executor_follows_the_same_rule(results: Path, capsys):
    failed_record(results, "JobDiedWithoutResult", "job 123 ended (NODE_FAIL) without a result", "run")
    assert main(run_args(results, executor="local")) == 0
    assert f"retrying 1 run(s) that failed before: {SPEC.run_id} (JobDiedWithoutResult" in capsys.readouterr().err
    assert load_record(results, SPEC.run_id)["status"] == "completed" and starts(results) == 1
    failed_record(results, "MissingWeightsError", "missing DINO weights: /w/dino.pth", "input")
    sweeps = len(mf.list_sweeps(results))
    assert main(run_args(results, executor="local")) == 1
    assert "1 run(s) failed on bad input before: skipped" in capsys.readouterr().err
    assert starts(results) == 1 and len(mf.list_sweeps(results)) == sweeps  # no job was started


def test_plan_sorts_every_case(tmp_path: Path):
    specs = [RunSpec("dino", "synthetic", "vit-s8", seed=s) for s in range(6)]
    write_record(tmp_path, {"run_id": specs[0].run_id, "status": "completed"})
    write_record(tmp_path, {"run_id": specs[1].run_id, "status": "failed", "error": {"type": "RuntimeError"}})
    write_record(tmp_path, {"run_id": specs[2].run_id, "status": "failed",
                            "error": {"type": "ValueError", "cause": "input"}})
    record_path(tmp_path, specs[3].run_id).write_text("{")
    plan = plan_runs(specs, tmp_path)
    assert [s.seed for s in plan.to_run] == [1, 3, 4, 5]
    assert [s.seed for s in plan.done] == [0] and [s.seed for s, _ in plan.input_failed] == [2]
    assert [s.seed for s, _, _ in plan.quarantined] == [3]
    assert [s.seed for s in plan_runs(specs, tmp_path, retry_failed=True).to_run] == [1, 2, 3, 4, 5]
    assert [s.seed for s in plan_runs(specs, tmp_path, force=True).to_run] == [0, 1, 2, 3, 4, 5]


# ---------------------------------------------------------------- status and collect


@pytest.fixture
def sweep(tmp_path: Path) -> dict:
    m = mf.new_manifest(tmp_path, "local", None)
    spec = SPEC.to_dict()
    mf.add_run(m, spec, SPEC.run_id, str(10_000_000), {})["state"] = "completed"
    write_record(tmp_path, {"run_id": SPEC.run_id, "status": "completed", "spec": spec,
                            "metrics": {"cluster": {"acc": 50.0, "miou": 20.0}}})
    mf.save(m)
    return m


def test_status_and_collect_name_a_corrupt_record(sweep: dict, tmp_path: Path, capsys):
    path = record_path(tmp_path, SPEC.run_id)
    path.write_text("{not json")
    assert main(["status", "--results", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "1 corrupt" in captured.out and "completed" not in captured.out
    (line,) = [ln for ln in captured.err.splitlines() if "corrupt run record" in ln]
    assert line.startswith(f"uss-bench status: error: corrupt run record {path}: ")
    for extra in ([], ["--format", "csv"]):
        assert main(["collect", "--results", str(tmp_path), *extra]) == 2
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err
        (line,) = [ln for ln in captured.err.splitlines() if "corrupt run record" in ln]
        assert line.startswith(f"uss-bench collect: error: corrupt run record {path}: ")
        assert not (tmp_path / "records.csv").exists()
    assert path.read_text() == "{not json"  # reading never moves or rewrites a record


def test_status_reads_records_and_locks_not_only_the_manifest(sweep: dict, tmp_path: Path, capsys):
    sweep["runs"][0]["state"] = "running"  # saved by a watcher that was killed before the run ended
    mf.save(sweep)
    assert main(["status", "--no-refresh", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == "1 completed"
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold, args=(str(tmp_path), SPEC.run_id, ready, release))
    other.start()
    try:
        assert ready.wait(60)
        assert main(["status", "--no-refresh", "--results", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert out.strip().splitlines()[-1] == "1 running" and f"pid {other.pid}" in out
    finally:
        release.set()
        other.join(10)


def test_collect_in_a_copied_results_directory_writes_there(sweep: dict, tmp_path: Path, capsys):
    saved = json.loads(mf.manifest_path(sweep).read_text())
    assert (saved["results_dir"], saved["sweep_dir"]) == (".", f"sweeps/{sweep['sweep_id']}")
    copy = tmp_path.parent / f"{tmp_path.name}-copy"
    shutil.copytree(tmp_path, copy)
    assert main(["collect", "--results", str(copy), "--format", "csv"]) == 0
    assert (copy / "records.csv").is_file() and not (tmp_path / "records.csv").exists()
    # a manifest written before paths were relative (absolute, pointing at the original) reads the same way
    old = {**saved, "results_dir": str(tmp_path), "sweep_dir": str(tmp_path / "sweeps" / sweep["sweep_id"]),
           "jobs_dir": str(tmp_path / "sweeps" / sweep["sweep_id"] / "jobs")}
    (copy / "sweeps" / sweep["sweep_id"] / "manifest.json").write_text(json.dumps(old))
    (copy / "records.csv").unlink()
    assert main(["collect", "--results", str(copy), "--format", "csv"]) == 0
    assert (copy / "records.csv").is_file() and not (tmp_path / "records.csv").exists()
    loaded = mf.find(copy)
    assert loaded["results_dir"] == str(copy) and loaded["jobs_dir"].startswith(str(copy))
    capsys.readouterr()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, *sys.argv[1:]]))
