"""What a (re-)run does with each requested spec, the same rule in every executor.

- no record: run it;
- completed: skip it (``--force`` recomputes);
- failed because the run itself broke (a crash, out of memory, a job that died, a preemption that
  never came back): run it again, and say so;
- failed on bad input (a corrupt or missing data file, missing weights, a checkpoint that does not fit):
  skip it, because it would fail the same way; ``--retry-failed`` runs it again once the input is fixed;
- a record that is not valid JSON: move it aside to ``<run_id>.json.corrupt`` and run again;
- another process holds the run's lock (``<results>/locks/<run_id>.lock``): skip it, naming the holder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uss_bench.results.locks import describe_holder, holder_of
from uss_bench.results.records import CorruptRecordError, load_record, quarantine

# Exceptions (and their subclasses, matched by name so old records classify too) that mean "the input
# is wrong": re-running without changing it fails the same way.
INPUT_ERRORS = frozenset({
    "DatasetError", "MissingWeightsError", "MissingKnnError", "CheckpointMismatchError", "UserError",
    "UnknownNameError", "FileNotFoundError", "InputError",
})


def error_cause(exc: BaseException) -> str:
    """``input`` when ``exc`` (or a base class of it) is an input error, else ``run``."""
    return "input" if {c.__name__ for c in type(exc).__mro__} & INPUT_ERRORS else "run"


def failure_cause(record: dict[str, Any]) -> str:
    """The recorded cause of a failed run (records older than the ``cause`` field: from the error type)."""
    error = record.get("error") or {}
    if error.get("cause") in ("input", "run"):
        return error["cause"]
    return "input" if error.get("type") in INPUT_ERRORS else "run"


@dataclass
class RunPlan:
    new: list[Any] = field(default_factory=list)
    retry: list[tuple[Any, str]] = field(default_factory=list)  # (spec, "Type: message" of the last failure)
    done: list[Any] = field(default_factory=list)
    input_failed: list[tuple[Any, str]] = field(default_factory=list)
    busy: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)  # (spec, lock holder)
    quarantined: list[tuple[Any, Path, str]] = field(default_factory=list)  # (spec, moved to, why)

    @property
    def to_run(self) -> list[Any]:
        """Specs to compute, in the order they were asked for."""
        chosen = {s.run_id for s in self.new} | {s.run_id for s, _ in self.retry}
        return [s for s in self._order if s.run_id in chosen]

    _order: list[Any] = field(default_factory=list, repr=False)

    def messages(self) -> list[str]:
        """One line per decision that is not plain 'run it', for stderr."""
        lines = []
        for _spec, moved, why in self.quarantined:
            lines.append(f"{why}; moved it to {moved} and the run is computed again")
        if self.done:
            lines.append(f"{len(self.done)} run(s) already completed: skipped (--force recomputes)")
        if self.retry:
            lines.append(f"retrying {len(self.retry)} run(s) that failed before: "
                         + "; ".join(f"{s.run_id} ({_first_line(e)})" for s, e in self.retry))
        if self.input_failed:
            lines.append(f"{len(self.input_failed)} run(s) failed on bad input before: skipped until the input is "
                         "fixed (--retry-failed runs them again): "
                         + "; ".join(f"{s.run_id} ({_first_line(e)})" for s, e in self.input_failed))
        for spec, holder in self.busy:
            lines.append(f"run {spec.run_id} ({spec.label()}) is already running ({describe_holder(holder)}): "
                         "skipped; its record appears when it finishes")
        return lines


def _first_line(text: str, width: int = 100) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else "no error recorded"
    return line if len(line) <= width else line[: width - 1] + "…"


def _error_text(record: dict[str, Any]) -> str:
    error = record.get("error") or {}
    return f"{error.get('type', 'Error')}: {error.get('message', '')}".strip()


def plan_runs(specs: list[Any], results_dir: str | Path, force: bool = False, retry_failed: bool = False) -> RunPlan:
    """Sort ``specs`` by what their record and lock say (see the module docstring)."""
    plan = RunPlan(_order=list(specs))
    for spec in specs:
        holder = holder_of(results_dir, spec.run_id)
        if holder is not None:
            plan.busy.append((spec, holder))
            continue
        try:
            record = load_record(results_dir, spec.run_id)
        except CorruptRecordError as exc:
            plan.quarantined.append((spec, quarantine(exc.path), f"corrupt run record {exc.path}"))
            record = None
        status = (record or {}).get("status")
        if record is None or force:
            plan.new.append(spec)
        elif status == "completed":
            plan.done.append(spec)
        elif status == "failed" and failure_cause(record) == "input" and not retry_failed:
            plan.input_failed.append((spec, _error_text(record)))
        elif status == "failed":
            plan.retry.append((spec, _error_text(record)))
        else:  # "running": a record left by a process that died (nobody holds the lock)
            plan.retry.append((spec, f"interrupted while {status}"))
    return plan
