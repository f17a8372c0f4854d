"""A job that Slurm is requeueing is not a failed run, even when the requeue command is killed mid-way."""

import subprocess

from uss_bench.pipeline.execute import _requeue_in_progress


def test_a_killed_scontrol_requeue_is_a_requeue_not_a_failure():
    killed = subprocess.CalledProcessError(-15, ["scontrol", "requeue", "266"])
    assert _requeue_in_progress(killed)


def test_other_errors_are_failures():
    assert not _requeue_in_progress(subprocess.CalledProcessError(1, ["scontrol", "show", "job", "266"]))
    assert not _requeue_in_progress(subprocess.CalledProcessError(1, "scontrol requeue 266"))  # not submitit's form
    assert not _requeue_in_progress(RuntimeError("scontrol requeue"))
