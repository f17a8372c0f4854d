"""train.init_stage: a run that starts from an earlier stage trains that stage first, as its own run."""

import json

import pytest
import torch

from uss_bench.cli import main
from uss_bench.config import ConfigError, validate_specs
from uss_bench.pipeline.execute import stage_weights_path
from uss_bench.spec import RunSpec


def _records(results):
    return {p.stem: json.loads(p.read_text()) for p in (results / "runs").glob("*.json")}


def test_stage_spec_keeps_identity_but_not_the_overrides():
    spec = RunSpec("hsg", "voc12", "fcn-resnet50", seed=3, protocol="hsg-knn", random_init=True,
                   overrides={"train.steps": 5})
    first = spec.stage("coco-stage1")
    assert (first.method, first.dataset, first.seed, first.protocol, first.random_init) == (
        "hsg", "voc12", 3, "hsg-knn", True)
    assert first.preset == "coco-stage1" and first.overrides == {} and first.run_id != spec.run_id


def test_init_stage_must_name_a_preset_that_starts_from_scratch():
    validate_specs([RunSpec("hsg", "voc12", "fcn-resnet50")])  # the published chain: coco-stage1 -> voc12
    with pytest.raises(ConfigError, match=r"train.init_stage 'nope' is not a preset of methods/hsg.yaml"):
        validate_specs([RunSpec("hsg", "voc12", "fcn-resnet50", overrides={"train.init_stage": "nope"})])


def test_config_command_checks_the_stage_like_run(capsys):
    assert main(["config", "hsg", "voc12", "--set", "train.init_stage=nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.init_stage 'nope' is not a preset of methods/hsg.yaml" in err[0]
    assert main(["config", "hsg", "voc12"]) == 0
    assert "coco-stage1" in capsys.readouterr().out


@pytest.mark.slow
def test_one_run_trains_its_stage_first_then_starts_from_its_weights(tmp_path):
    results, data = tmp_path / "r", tmp_path / "d"
    args = ["run", "--methods", "hsg", "--datasets", "synthetic", "--preset", "smoke", "--results", str(results),
            "--data-root", str(data), "--set", "train.init_stage=smoke", "train.steps=2"]
    assert main(args) == 0
    stage = RunSpec("hsg", "synthetic", "fcn-resnet50", preset="smoke", random_init=True)
    records = _records(results)
    assert stage.run_id in records and len(records) == 2
    second = next(r for r in records.values() if r["run_id"] != stage.run_id)
    first = records[stage.run_id]
    assert first["status"] == second["status"] == "completed"
    assert first["spec"]["overrides"] == {} and first["train"]["steps"] == 10  # the stage's own preset
    weights = stage_weights_path(results, stage.run_id)
    assert second["init_stage"] == {"preset": "smoke", "run_id": stage.run_id, "weights": str(weights)}
    assert second["config"]["hparams"]["init_from"] == str(weights) and second["train"]["steps"] == 2
    saved = torch.load(weights, map_location="cpu", weights_only=True)["method"]
    assert any(k.startswith("trunk.") for k in saved) and any(k.startswith("head.") for k in saved)
    # the second run's log names the stage it trained first (the progress display follows it)
    first_line = (results / "logs" / f"{second['run_id']}.jsonl").read_text().splitlines()[0]
    assert json.loads(first_line) == {"stage": "smoke", "stage_run_id": stage.run_id}

    # another run from the same stage reuses it: no new training, same weights file and stage record
    mtime = weights.stat().st_mtime_ns
    assert main([*args[:-1], "train.steps=3"]) == 0
    assert weights.stat().st_mtime_ns == mtime and _records(results)[stage.run_id] == first
    assert len(_records(results)) == 3

    # weights gone: the stage is trained again before the next run that needs it
    weights.unlink()
    assert main([*args[:-1], "train.steps=4"]) == 0
    assert weights.is_file() and _records(results)[stage.run_id]["created"] >= first["created"]
    assert len(_records(results)) == 4

    # a corrupt stage record: moved aside, the stage trained again, the next run completes
    (results / "runs" / f"{stage.run_id}.json").write_text("{not json")
    assert main([*args[:-1], "train.steps=5"]) == 0
    assert (results / "runs" / f"{stage.run_id}.json.corrupt").is_file()
    assert _records(results)[stage.run_id]["status"] == "completed" and len(_records(results)) == 5


def test_progress_shows_the_stage_a_run_trains_first(tmp_path):
    from uss_bench.launch.dispatch import StepProgress

    spec = RunSpec("hsg", "voc12", "fcn-resnet50")
    stage = spec.stage("coco-stage1")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / f"{spec.run_id}.jsonl").write_text(json.dumps({"stage": "coco-stage1", "stage_run_id": stage.run_id})
                                               + "\n")
    (logs / f"{stage.run_id}.jsonl").write_text(json.dumps({"step": 7, "total": 350000}) + "\n")
    progress = StepProgress([spec], tmp_path)
    (line,) = progress.lines()
    assert line.endswith(f"{spec.run_id} {spec.label()}: stage coco-stage1 step 7/350000")
    assert progress.lines() == []  # unchanged: not printed again
    with open(logs / f"{spec.run_id}.jsonl", "a") as log:  # stage 2's own steps take over
        log.write(json.dumps({"step": 1, "total": 20000}) + "\n")
    (line,) = progress.lines()
    assert line.endswith(": step 1/20000")
