"""``uss-bench`` with the training replaced by a slow fake, for tests with real concurrent processes.

Run as a script: ``python tests/launch/fake_training.py run --methods dino ...``. Everything real stays
real (CLI, run plan, run lock, records, local executor); only ``pipeline.execute._execute`` (build, train,
evaluate) becomes :func:`fake_execute`, which logs a line per "step" to ``<results>/fake_steps.log`` and
sleeps ``$FAKE_STEP_S`` between its ``$FAKE_STEPS`` steps, then waits for ``$FAKE_HOLD_FILE`` if set.
Local submitit jobs get the same fake through :class:`FakeSpecJob` (pickled by value: it is defined in ``__main__``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any


def fake_execute(spec: Any, env: Any, keep_weights: Any = None) -> dict[str, Any]:
    from uss_bench.results.records import write_record

    log = Path(env.results_dir) / "fake_steps.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    steps, pause = int(os.environ.get("FAKE_STEPS", "5")), float(os.environ.get("FAKE_STEP_S", "1"))
    for step in range(1, steps + 1):
        with open(log, "a") as fh:
            fh.write(f"{spec.run_id} pid {os.getpid()} step {step}/{steps}\n")
        time.sleep(pause)
    hold = os.environ.get("FAKE_HOLD_FILE")  # tests: keep "training" until they create this file
    deadline = time.monotonic() + 120
    while hold and not Path(hold).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    record = {"run_id": spec.run_id, "spec": spec.to_dict(), "status": "completed",
              "metrics": {"cluster": {"acc": 50.0, "miou": 20.0}}, "train": {"steps": steps}}
    write_record(env.results_dir, record)
    return record


class FakeSpecJob:
    """:class:`uss_bench.launch.jobs.SpecJob` with the fake training, inside the submitit process."""

    def __call__(self, spec: Any, env: Any) -> dict[str, Any]:
        import uss_bench.pipeline.execute as execute
        from uss_bench.launch.jobs import SpecJob

        execute._execute = fake_execute
        return SpecJob()(spec, env)


def main(argv: list[str]) -> int:
    import uss_bench.launch.jobs as jobs
    import uss_bench.pipeline.execute as execute
    from uss_bench.cli import main as cli_main

    execute._execute = fake_execute
    jobs.SpecJob = FakeSpecJob
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
