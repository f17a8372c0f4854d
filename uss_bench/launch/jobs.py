"""What a submitted job runs: a module-level callable plus a RunSpec and a RunEnv, nothing bigger.

Pickles stay small (a spec is a few hundred bytes; models and datasets are built inside the job) and
tracebacks point at real modules. The callable is checkpointable: on preemption or timeout submitit
calls :meth:`SpecJob.checkpoint`, which re-submits the same arguments; the requeued job calls the
runner again, which resumes training from ``<results_dir>/checkpoints/<run_id>/last.pt`` and skips
work whose record is already complete (evaluation is idempotent).
"""

from __future__ import annotations

from typing import Any

ALREADY_RUNNING = "already-running"  # a job's result when the run's lock was taken (the watchdog skips it)


class SpecJob:
    """Run one spec in this process; returns a small summary (the record itself is on disk)."""

    def __call__(self, spec: Any, env: Any) -> dict[str, Any]:
        from uss_bench.pipeline import execute_spec
        from uss_bench.results.locks import RunLockedError

        try:
            record = execute_spec(spec, env)
        except RunLockedError as exc:  # another process computes this run: this job does nothing
            return {"run_id": spec.run_id, "status": ALREADY_RUNNING, "message": str(exc), "holder": exc.holder}
        return {"run_id": record.get("run_id", spec.run_id), "status": record.get("status")}

    def checkpoint(self, spec: Any, env: Any) -> Any:
        """Called by submitit on USR2 (preemption/timeout): requeue with the same arguments.

        The training loop writes ``last.pt`` every ``env.checkpoint_every`` steps, so nothing needs
        saving here; the resumed run continues from the last periodic checkpoint.
        """
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, spec, env)

    def __repr__(self) -> str:  # shows in submitit's logs
        return "SpecJob()"
