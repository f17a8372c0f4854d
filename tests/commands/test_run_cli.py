import json

from uss_bench.cli import main


def test_dino_smoke_run_end_to_end(tmp_path, capsys):
    args = ["run", "--methods", "dino", "--datasets", "synthetic", "--preset", "smoke", "--executor", "inline",
            "--results", str(tmp_path / "results"), "--data-root", str(tmp_path / "data")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "random init" in out and "| dino" in out
    (record_file,) = (tmp_path / "results" / "runs").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "completed"
    assert record["spec"]["random_init"] is True
    assert record["protocol"]["name"] == "uss" and record["protocol"]["eval_res"] == 64
    assert record["environment"]["torch"]
    # 6 classes; the largest class covers ~1/4 of the pixels: clearly above chance means well above that
    assert record["metrics"]["cluster"]["acc"] > 45
    assert record["metrics"]["linear"]["acc"] > 60
    assert set(record["metrics"]) == {"cluster", "linear", "cluster_crf", "linear_crf"}
    assert len(record["metrics"]["cluster"]["iou"]) == 6
    # matched cluster predictions of the dataset card's figure ids, for `uss-bench figure`
    saved = sorted(p.name for p in (tmp_path / "results" / "predictions" / record["run_id"]).glob("*.png"))
    assert saved == ["00000.png", "00003.png", "00007.png", "00011.png"]
    # a completed run is not recomputed
    mtime = record_file.stat().st_mtime_ns
    assert main(args) == 0
    assert record_file.stat().st_mtime_ns == mtime


def test_unknown_method_fails_before_running(tmp_path, capsys):
    code = main(["run", "--methods", "dino,dnio", "--datasets", "synthetic", "--results", str(tmp_path)])
    assert code == 2
    assert "did you mean" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_preflight_names_missing_weights(tmp_path):
    from uss_bench.pipeline import RunEnv, preflight
    from uss_bench.spec import RunSpec

    env = RunEnv(results_dir=tmp_path / "r", data_root=tmp_path / "d", weights_dir=tmp_path / "w")
    problems = preflight([RunSpec("dino", "synthetic", "vit-b16", preset="smoke", random_init=False)], env)
    assert problems == [
        f"missing DINO weights for vit-b16: {tmp_path / 'w' / 'dino_vitbase16_pretrain.pth'}; download "
        "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth into --weights-dir "
        "(or USS_BENCH_WEIGHTS), or pass --random-init for a smoke run"
    ]


def test_list_commands(capsys):
    assert main(["list", "methods"]) == 0
    assert "dino" in capsys.readouterr().out
    assert main(["list", "protocols"]) == 0
    assert "stego" in capsys.readouterr().out
