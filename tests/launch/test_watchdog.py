import json
import os
import pickle
import time
from pathlib import Path

import pytest

from uss_bench.launch import manifest as mf
from uss_bench.launch import watchdog
from uss_bench.results.records import load_record, write_record

DATA = Path(__file__).parent / "data"


def test_expand_job_id_handles_ranges_lists_steps_and_throttle():
    assert watchdog.expand_job_id("7_[3-4%2]") == ["7_3", "7_4"]
    assert watchdog.expand_job_id("7_[0,3-4]") == ["7_0", "7_3", "7_4"]
    assert watchdog.expand_job_id("7_[0-6:3]") == ["7_0", "7_3", "7_6"]
    assert watchdog.expand_job_id("7_5") == ["7_5"]
    assert watchdog.expand_job_id("13") == ["13"]


def test_parse_real_squeue_output():
    snap = watchdog.parse_squeue((DATA / "squeue_all.txt").read_text())
    assert snap["7_3"] == ("PENDING", "Resources") and snap["7_4"] == ("PENDING", "Resources")
    assert snap["7_2"] == ("RUNNING", "None")
    assert snap["8"] == ("PENDING", "Priority")
    assert snap["2_0"] == ("COMPLETED", "None")
    assert len(snap) == 12  # 11 lines, one of them a 2-task range
    later = watchdog.parse_squeue((DATA / "squeue_terminal.txt").read_text())
    assert later["8"] == ("FAILED", "NonZeroExitCode")


def test_parse_squeue_state_suffixes_and_garbage():
    snap = watchdog.parse_squeue("5|CANCELLED by 0|None\n6|COMPLETED+|None\n")
    assert snap == {"5": ("CANCELLED", "None"), "6": ("COMPLETED", "None")}
    with pytest.raises(ValueError, match="unexpected squeue line"):
        watchdog.parse_squeue("no separators here")


def test_parse_real_scontrol_output():
    (job,) = watchdog.parse_scontrol((DATA / "scontrol_failed.txt").read_text())
    assert job["JobId"] == "8" and job["JobState"] == "FAILED" and job["ExitCode"] == "3:0"
    assert job["Reason"] == "NonZeroExitCode" and job["StdErr"] == "/tmp/f.err"
    assert job["AllocNode:Sid"] == "localhost:3630" and job["Power"] == ""
    tasks = watchdog.parse_scontrol((DATA / "scontrol_array.txt").read_text())
    assert [(t["ArrayJobId"], t["ArrayTaskId"]) for t in tasks] == [("7", "4"), ("7", "3"), ("7", "2")]


# ------------------------------------------------------------------ reconciling a manifest


@pytest.fixture
def sweep(tmp_path: Path) -> dict:
    manifest = mf.new_manifest(tmp_path / "results", "slurm", "local-ci")
    Path(manifest["jobs_dir"]).mkdir(parents=True)
    for i, job_id in enumerate(["40_0", "40_1"]):
        spec = {"method": "dino", "dataset": "synthetic", "backbone": "vit-s8", "seed": i}
        mf.add_run(manifest, spec, f"run{i}", job_id, {})
    return manifest


def write_log(manifest: dict, job_id: str, text: str) -> None:
    (Path(manifest["jobs_dir"]) / f"{job_id}_0_log.err").write_text(text)


def test_scheduler_states_map_to_run_states(sweep: dict):
    snap = {"40_0": ("PENDING", "BeginTime"), "40_1": ("RUNNING", "None")}
    changed = watchdog.refresh(sweep, snap, now=100.0)
    assert [r["state"] for r in sweep["runs"]] == ["requeued", "running"] and len(changed) == 2
    watchdog.refresh(sweep, {"40_0": ("PENDING", "Resources"), "40_1": ("COMPLETING", "None")}, now=101.0)
    assert [r["state"] for r in sweep["runs"]] == ["pending", "running"]


def test_no_scheduler_answer_declares_nothing_dead(sweep: dict):
    assert watchdog.refresh(sweep, None, now=0.0) == []
    assert [r["state"] for r in sweep["runs"]] == ["submitted", "submitted"]


def test_job_that_died_without_result_fails_after_grace_with_log_tail(sweep: dict, monkeypatch):
    monkeypatch.setattr(watchdog, "scontrol_job", lambda job_id: {"ExitCode": "3:0"})
    write_log(sweep, "40_0", "\n".join(f"line {i}" for i in range(30)) + "\nabout to die\n")
    snap = {"40_0": ("FAILED", "NonZeroExitCode"), "40_1": ("RUNNING", "None")}
    watchdog.refresh(sweep, snap, grace_s=10, now=1000.0)
    assert sweep["runs"][0]["state"] == "submitted"  # first sight: within the grace period
    watchdog.refresh(sweep, snap, grace_s=10, now=1010.0)
    run = sweep["runs"][0]
    assert run["state"] == "failed"
    assert "job 40_0 ended (FAILED, exit code 3:0) without a result" in run["error"]
    assert run["error"].rstrip().endswith("about to die") and "line 9\n" not in run["error"]  # tail only
    record = load_record(sweep["results_dir"], "run0")
    assert record["status"] == "failed" and record["error"]["type"] == "JobDiedWithoutResult"
    assert record["spec"]["seed"] == 0 and "about to die" in record["error"]["traceback"]
    assert sweep["runs"][1]["state"] == "running"


def test_job_vanished_from_slurm_fails_after_grace(sweep: dict):
    watchdog.refresh(sweep, {"40_1": ("RUNNING", "None")}, grace_s=5, now=0.0)
    watchdog.refresh(sweep, {"40_1": ("RUNNING", "None")}, grace_s=5, now=6.0)
    assert sweep["runs"][0]["state"] == "failed"
    assert "no longer known to Slurm" in sweep["runs"][0]["error"]


def test_job_that_comes_back_resets_the_grace_clock(sweep: dict):
    watchdog.refresh(sweep, {"40_0": ("COMPLETED", "None")}, grace_s=5, now=0.0)
    watchdog.refresh(sweep, {"40_0": ("PENDING", "BeginTime")}, grace_s=5, now=3.0)  # requeued after all
    watchdog.refresh(sweep, {"40_0": ("RUNNING", "None")}, grace_s=5, now=9.0)
    assert sweep["runs"][0]["state"] == "running"


def test_record_decides_and_old_records_are_ignored(sweep: dict):
    results = sweep["results_dir"]
    write_record(results, {"run_id": "run0", "status": "completed", "spec": {}})
    write_record(results, {"run_id": "run1", "status": "failed", "spec": {},
                           "error": {"type": "ValueError", "message": "bad lr"}})
    old = time.time() - 3600  # run1's record is from an earlier attempt
    os.utime(Path(results) / "runs" / "run1.json", (old, old))
    watchdog.refresh(sweep, {"40_0": ("RUNNING", "None"), "40_1": ("RUNNING", "None")})
    assert [r["state"] for r in sweep["runs"]] == ["completed", "running"]
    os.utime(Path(results) / "runs" / "run1.json")
    watchdog.refresh(sweep, {"40_1": ("COMPLETING", "None")})
    assert sweep["runs"][1]["state"] == "running"  # the job still runs: could be a preempted one
    watchdog.refresh(sweep, {"40_1": ("FAILED", "NonZeroExitCode")})
    assert sweep["runs"][1]["state"] == "failed" and sweep["runs"][1]["error"] == "ValueError: bad lr"


def test_exception_result_pickle_fails_the_run(sweep: dict):
    with open(Path(sweep["jobs_dir"]) / "40_1_0_result.pkl", "wb") as fh:
        pickle.dump(("error", "Traceback...\nImportError: no module named x"), fh)
    watchdog.refresh(sweep, {"40_0": ("RUNNING", "None"), "40_1": ("COMPLETED", "None")}, now=0.0)
    assert sweep["runs"][1]["state"] == "failed" and "ImportError" in sweep["runs"][1]["error"]


def test_wait_times_out_and_saves_progress(sweep: dict):
    mf.save(sweep)
    start = time.monotonic()
    done = watchdog.wait(sweep, lambda ids: {i: ("PENDING", "Priority") for i in ids}, timeout_s=0.3, poll_s=0.05)
    assert not done and time.monotonic() - start < 2
    saved = json.loads(mf.manifest_path(sweep).read_text())
    assert [r["state"] for r in saved["runs"]] == ["pending", "pending"]


def test_wait_returns_when_everything_finished(sweep: dict):
    for run in sweep["runs"]:
        write_record(sweep["results_dir"], {"run_id": run["run_id"], "status": "completed", "spec": {}})
    assert watchdog.wait(sweep, lambda ids: {}, timeout_s=5, poll_s=0.05)


def test_failed_record_of_a_requeued_job_is_not_final(sweep: dict):
    """submitit exits a preempted job through SystemExit, which the runner records as failed."""
    results = sweep["results_dir"]
    write_record(results, {"run_id": "run0", "status": "failed", "spec": {},
                           "error": {"type": "SystemExit", "message": "-1"}})
    watchdog.refresh(sweep, {"40_0": ("PENDING", "BeginTime")}, now=0.0)
    assert sweep["runs"][0]["state"] == "requeued"
    write_record(results, {"run_id": "run0", "status": "completed", "spec": {}})
    watchdog.refresh(sweep, {"40_0": ("RUNNING", "None")}, now=1.0)
    assert sweep["runs"][0]["state"] == "completed"


def test_failed_record_is_final_once_the_job_ended(sweep: dict):
    write_record(sweep["results_dir"], {"run_id": "run1", "status": "failed", "spec": {},
                                        "error": {"type": "RuntimeError", "message": "nan loss"}})
    watchdog.refresh(sweep, {"40_1": ("FAILED", "NonZeroExitCode")}, now=0.0)
    assert sweep["runs"][1]["state"] == "failed" and sweep["runs"][1]["error"] == "RuntimeError: nan loss"


def test_job_that_found_its_run_locked_is_skipped_not_failed(sweep: dict):
    from uss_bench.launch.jobs import ALREADY_RUNNING

    message = "run run1 is already running (pid 4242 on vm / job id 39_1)"
    with open(Path(sweep["jobs_dir"]) / "40_1_0_result.pkl", "wb") as fh:
        pickle.dump(("success", {"run_id": "run1", "status": ALREADY_RUNNING, "message": message}), fh)
    watchdog.refresh(sweep, {"40_0": ("RUNNING", "None"), "40_1": ("COMPLETED", "None")}, now=0.0)
    assert (sweep["runs"][1]["state"], sweep["runs"][1]["error"]) == ("skipped", message)
    assert load_record(sweep["results_dir"], "run1") is None  # the other process's record is not pre-empted
    assert not mf.is_finished(sweep)
    sweep["runs"][0]["state"] = "completed"
    assert mf.is_finished(sweep)  # skipped is final for this sweep
