"""The runner's deferred CRF: logits saved during evaluation, CRF applied later by the CPU stage."""

import pytest

from uss_bench.launch.crf_stage import run_stage
from uss_bench.pipeline import RunEnv, execute_spec
from uss_bench.spec import RunSpec


def test_deferred_crf_matches_in_loop_crf(tmp_path):
    spec = RunSpec("dino", "synthetic", "vit-s16", preset="smoke", random_init=True, overrides={"train.steps": 10})
    inline = execute_spec(spec, RunEnv(results_dir=tmp_path / "a", data_root=tmp_path / "data", device="cpu"))
    deferred_env = RunEnv(results_dir=tmp_path / "b", data_root=tmp_path / "data", device="cpu", defer_crf=True)
    deferred = execute_spec(spec, deferred_env)
    assert "cluster_crf" not in deferred["metrics"]
    assert deferred["metrics"]["cluster"] == inline["metrics"]["cluster"]  # same run, same no-CRF numbers
    (record,) = run_stage(tmp_path / "b", [spec.run_id], executor="inline")
    for key in ("cluster_crf", "linear_crf"):
        # logits are stored as float16: the CRF input differs in the last bits only
        assert record["metrics"][key]["acc"] == pytest.approx(inline["metrics"][key]["acc"], abs=1.0)
        assert record["metrics"][key]["n_pixels"] == inline["metrics"][key]["n_pixels"]
    assert record["crf"]["stage"] == "separate"
