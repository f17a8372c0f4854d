"""Bad input gets one clear line before any work: exit 2, no traceback, no data generated, no record."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from uss_bench.cli import main
from uss_bench.data.fixtures import write_fixture

SMOKE = ["run", "--methods", "dino", "--datasets", "synthetic", "--preset", "smoke", "--executor", "inline"]


def paths(tmp_path):
    return ["--results", str(tmp_path / "results"), "--data-root", str(tmp_path / "data")]


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def nothing_done(tmp_path):
    assert not (tmp_path / "results" / "runs").exists()
    assert not (tmp_path / "data").exists()  # the synthetic data was not even generated


# ---- §1 the request ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seeds, needle", [("-1", "-1 is outside"), ("99999999999", "outside 0..4294967295"),
                                           ("abc", "'abc' is not an integer"), ("0,x", "'x' is not an integer")])
def test_bad_seeds(tmp_path, capsys, seeds, needle):
    assert main([*SMOKE, "--seeds", seeds, *paths(tmp_path)]) == 2
    one_line_error(capsys, "--seeds", needle)
    nothing_done(tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda(tmp_path, capsys):
    assert main([*SMOKE, "--device", "cuda", *paths(tmp_path)]) == 2
    one_line_error(capsys, "--device cuda: CUDA is not available")
    nothing_done(tmp_path)


def test_unknown_device_and_negative_workers(tmp_path, capsys):
    assert main([*SMOKE, "--device", "gpu0", *paths(tmp_path)]) == 2
    one_line_error(capsys, "--device 'gpu0'")
    assert main([*SMOKE, "--num-workers", "-1", *paths(tmp_path)]) == 2
    one_line_error(capsys, "--num-workers -1: must be 0 or more")
    nothing_done(tmp_path)


def test_results_is_a_file(tmp_path, capsys):
    results = tmp_path / "results"
    results.write_text("not a directory")
    assert main([*SMOKE, "--results", str(results), "--data-root", str(tmp_path / "data")]) == 2
    one_line_error(capsys, f"--results {results}: is a file")
    assert not (tmp_path / "data").exists()


def test_results_in_a_read_only_directory(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway; make the probe see what any other user sees
        import tempfile

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        assert main([*SMOKE, "--results", str(ro / "results"), "--data-root", str(tmp_path / "data")]) == 2
    finally:
        ro.chmod(0o755)
    one_line_error(capsys, f"--results {ro / 'results'}: cannot be created: {ro} is not writable")
    assert not (tmp_path / "data").exists()


def test_profile_that_is_not_yaml_names_file_and_line(tmp_path, capsys, monkeypatch):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "broken.yaml").write_text("partition: gpu\nmem_gb: [32\ngpus: 1\n")
    monkeypatch.setenv("USS_BENCH_PROFILES", str(profiles))
    args = ["run", "--methods", "dino", "--datasets", "synthetic", "--preset", "smoke", "--executor", "local",
            "--profile", "broken", *paths(tmp_path)]
    assert main(args) == 2
    line = one_line_error(capsys, f"{profiles / 'broken.yaml'}:3: not valid YAML")
    assert line.startswith("uss-bench run: error:")
    nothing_done(tmp_path)


def test_profile_typo_generates_no_data(tmp_path, capsys):
    args = ["run", "--methods", "dino", "--datasets", "synthetic", "--preset", "smoke", "--executor", "local",
            "--profile", "cpuu", *paths(tmp_path)]
    assert main(args) == 2
    one_line_error(capsys, "unknown profile 'cpuu'", "did you mean: cpu")
    nothing_done(tmp_path)


def test_training_split_smaller_than_the_batch_size(tmp_path, capsys):
    write_fixture("cocostuff27", tmp_path / "fx")  # the library's tiny size: 4 train images
    args = ["run", "--methods", "dino", "--datasets", "cocostuff27", "--random-init", "--preset", "smoke",
            "--executor", "inline", "--results", str(tmp_path / "results"), "--data-root", str(tmp_path / "fx")]
    assert main(args) == 2
    one_line_error(capsys, "the training split 'train' has 4 images, fewer than the batch size 8 of dino")
    assert not (tmp_path / "results" / "runs").exists()


def test_fixture_cli_writes_enough_for_a_smoke_demo(tmp_path, capsys):
    from uss_bench.pipeline import RunEnv, expand_specs, preflight

    assert main(["datasets", "fixture", "cocostuff27", "--out", str(tmp_path / "fx")]) == 0
    assert "train 8" in capsys.readouterr().out
    specs = expand_specs("all", "cocostuff27", preset="smoke", random_init=True)
    assert preflight(specs, RunEnv(results_dir=tmp_path / "r", data_root=tmp_path / "fx")) == []


# ---- §2 weights and checkpoints -------------------------------------------------------------------------


def demo_fixture(tmp_path):
    write_fixture("cocostuff27", tmp_path / "fx", train_images=8)
    return ["--results", str(tmp_path / "results"), "--data-root", str(tmp_path / "fx")]


def test_weights_file_of_random_bytes(tmp_path, capsys):
    weights = tmp_path / "w"
    weights.mkdir()
    bad = weights / "dino_deitsmall8_300ep_pretrain.pth"
    bad.write_bytes(os.urandom(4096))
    args = ["run", "--methods", "dino", "--datasets", "cocostuff27", "--preset", "smoke", "--executor", "inline",
            "--weights-dir", str(weights), *demo_fixture(tmp_path)]
    assert main(args) == 2
    one_line_error(capsys, f"{bad}: not a readable DINO vit-s8 weights file")
    assert not (tmp_path / "results" / "runs").exists()


def test_weights_file_of_another_network(tmp_path, capsys):
    weights = tmp_path / "w"
    weights.mkdir()
    bad = weights / "dino_deitsmall8_300ep_pretrain.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    args = ["run", "--methods", "dino", "--datasets", "cocostuff27", "--preset", "smoke", "--executor", "inline",
            "--weights-dir", str(weights), *demo_fixture(tmp_path)]
    assert main(args) == 2
    one_line_error(capsys, f"{bad}: not DINO vit-s8 weights: missing key(s) cls_token")
    assert not (tmp_path / "results" / "runs").exists()


def eval_args(tmp_path, checkpoint, method="stego"):
    return ["eval", "--method", method, "--checkpoint", str(checkpoint), "--datasets", "synthetic", "--preset",
            "smoke", "--results", str(tmp_path / "results"), "--data-root", str(tmp_path / "data")]


def test_eval_checkpoint_of_random_bytes(tmp_path, capsys):
    bad = tmp_path / "noise.ckpt"
    bad.write_bytes(os.urandom(4096))
    assert main(eval_args(tmp_path, bad)) == 2
    one_line_error(capsys, f"{bad}: not a readable PyTorch checkpoint")
    assert not (tmp_path / "results" / "runs").exists()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_eval_crafted_checkpoint_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "marker"
    bad = tmp_path / "evil.ckpt"
    torch.save({"hyper_parameters": _Payload(marker)}, bad)
    assert main(eval_args(tmp_path, bad)) == 2
    one_line_error(capsys, f"{bad}: expected a STEGO Lightning .ckpt")
    assert not marker.exists()
    assert not (tmp_path / "results" / "runs").exists()


def test_eval_without_weights_suggests_no_run_option_and_writes_no_record(tmp_path, capsys):
    """An HP file without the ViT needs the DINO weights; the message must not offer `run`'s --random-init."""
    g = torch.Generator().manual_seed(0)
    net = {"cluster1.0.weight": torch.randn(5, 384, 1, 1, generator=g), "cluster1.0.bias": torch.zeros(5)}
    path = tmp_path / "ckpt.pth"
    torch.save({"net_model_state_dict": net, "linear_model_state_dict": {"weight": torch.zeros(6, 5, 1, 1),
                "bias": torch.zeros(6)}, "cluster_model_state_dict": {"clusters": torch.zeros(6, 5)}}, path)
    assert main([*eval_args(tmp_path, path, "hp"), "--weights-dir", str(tmp_path / "w")]) == 2
    line = one_line_error(capsys, "missing DINO weights for vit-s8")
    assert "--random-init" not in line
    assert not (tmp_path / "results" / "runs").exists()


@pytest.mark.parametrize("option", [["--checkpoint-every", "5"], ["--defer-crf"]])
def test_eval_offers_no_training_options(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_info:
        main([*eval_args(tmp_path, tmp_path / "x.ckpt"), *option])
    assert exit_info.value.code == 2
    assert f"unrecognized arguments: {option[0]}" in capsys.readouterr().err


# ---- §3 data ----------------------------------------------------------------------------------------------


def test_truncated_image_in_a_split_run_reads_fails_before_training(tmp_path, capsys):
    args = ["run", "--methods", "dino", "--datasets", "cocostuff27", "--random-init", "--preset", "smoke",
            "--executor", "inline", *demo_fixture(tmp_path)]
    image = tmp_path / "fx" / "cocostuff" / "images" / "train2017" / "000000000030.jpg"
    image.write_bytes(image.read_bytes()[:200])
    assert main(args) == 2
    one_line_error(capsys, f"corrupt or truncated image {image}")
    assert not (tmp_path / "results" / "runs").exists()


def test_corrupt_file_found_while_running_keeps_the_checkpoint_and_resumes(tmp_path, capsys, monkeypatch):
    """A file the up-front sample did not decode breaks evaluation: one line, the checkpoint stays, and the
    re-run after the fix resumes from it instead of training again."""
    import json

    import uss_bench.pipeline as pipeline

    monkeypatch.setattr(pipeline, "preflight", lambda specs, env: [])  # as if the sample had missed the file
    write_fixture("synthetic", tmp_path / "data")
    (image,) = (tmp_path / "data" / "synthetic").glob("*/images/val/00005.png")
    good = image.read_bytes()
    image.write_bytes(good[:100])
    args = [*SMOKE, "--set", "train.steps=4", *paths(tmp_path)]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    failed = [line for line in err.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and f"corrupt or truncated image {image}" in failed[0]
    (checkpoint,) = (tmp_path / "results" / "checkpoints").glob("*/last.pt")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert saved["step"] == 4
    assert not any(k.startswith("backbone.") for k in saved["method"])  # the frozen ViT is not stored
    assert checkpoint.stat().st_size < 2_000_000
    image.write_bytes(good)
    # a failure on bad input is retried once the user says the input is fixed (the re-run rule)
    assert main(args) == 1 and "failed on bad input before" in capsys.readouterr().err
    (record_file,) = (tmp_path / "results" / "runs").glob("*.json")
    assert json.loads(record_file.read_text())["status"] == "failed"  # skipped, not retried, until --retry-failed
    assert main([*args, "--retry-failed"]) == 0
    (record_file,) = (tmp_path / "results" / "runs").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "completed" and record["train"]["resumed_from"] == 4


# ---- §7 first use -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["list", "methods"], ["list", "datasets"], ["list", "backbones"],
                                  ["list", "tables"], ["list", "protocols"], ["table", "ppap-t1"], ["check"],
                                  ["status"], ["collect"]])
def test_commands_that_only_read_import_no_torch(tmp_path, argv):
    code = ("import sys\nfrom uss_bench.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    extra = ["--results", str(tmp_path)] if argv[0] in ("table", "check", "status", "collect") else []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", code, *argv, *extra], capture_output=True, text=True, env=env,
                          timeout=120)
    assert "torch was imported" not in proc.stderr, proc.stderr


def test_list_has_a_description_for_every_name_and_aligned_columns(capsys):
    from uss_bench.registry import BACKBONES, DATASETS, METHODS, PROTOCOLS

    for kind, registry in (("methods", METHODS), ("datasets", DATASETS), ("backbones", BACKBONES),
                           ("protocols", PROTOCOLS)):  # protocols: PROTOCOL_MODULES define every one
        assert main(["list", kind]) == 0
        lines = capsys.readouterr().out.splitlines()
        registry.load()
        assert sorted(line.split()[0] for line in lines) == sorted(registry._items)  # catalog == registry
        width = max(len(line.split()[0]) for line in lines)
        for line in lines:
            assert line[width:width + 2] == "  " and line[width + 2:].strip() and line[width + 2] != " ", line
            assert "None" not in line


def test_step_progress_reads_the_run_logs(tmp_path):
    from uss_bench.launch.dispatch import StepProgress, last_step
    from uss_bench.spec import RunSpec

    spec = RunSpec("dino", "synthetic", "vit-s8", preset="smoke", random_init=True)
    log = tmp_path / "logs" / f"{spec.run_id}.jsonl"
    log.parent.mkdir()
    log.write_text('{"step": 10, "total": 40, "loss": 1.0}\n{"step": 10, "val_score": 3.0}\n')
    assert last_step(log) == (10, 40)
    progress = StepProgress([spec], tmp_path)
    (line,) = progress.lines()
    assert line.endswith(f"{spec.run_id} {spec.label()}: step 10/40")
    assert progress.lines() == []  # unchanged: not printed again


def test_failure_line_unwraps_a_dataloader_worker_error():
    from uss_bench.launch.dispatch import failure_line

    wrapped = ("Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\nuss_bench.data.base.DatasetError: corrupt or truncated image /d/a.png: '
               "broken data stream\n")
    expected = "DatasetError: corrupt or truncated image /d/a.png: broken data stream"
    assert failure_line("DatasetError", wrapped) == expected
    assert failure_line("ValueError", "bad value\nmore") == "ValueError: bad value"
