"""`uss-bench run` refuses a bad --preset/--set in one line before any work; `uss-bench config` shows the layers."""

import json

import pytest

from uss_bench.cli import main


def _run(tmp_path, *extra):
    return main(["run", "--methods", "dino", "--datasets", "synthetic", "--results", str(tmp_path / "results"),
                 "--data-root", str(tmp_path / "data"), "--executor", "inline", *extra])


@pytest.mark.parametrize("extra,message", [
    (["--preset", "smok"], "unknown preset 'smok' for method dino (did you mean: smoke?); presets: default, smoke"),
    (["--set", "nosuch.key=1"], "--set nosuch.key=1: keys look like <train|probes|hparams|protocol>.<key>"),
    (["--set", "train.nosuch=1"], "--set train.nosuch=1: unknown key train.nosuch for dino on synthetic"),
    (["--set", "hparams.tau=0.5"], "--set hparams.tau=0.5: unknown key hparams.tau for dino on synthetic (dino "
                                   "defines no hparams keys)"),
    (["--set", "train.steps=abc"], "--set train.steps=abc: train.steps must be an integer >= 1, got 'abc'"),
    (["--set", "train.batch_size=0"], "--set train.batch_size=0: train.batch_size must be an integer >= 1, got 0"),
    (["--set", "train.steps=-5"], "--set train.steps=-5: train.steps must be an integer >= 1, got -5"),
    (["--set", "protocol.crf=maybe"], "--set protocol.crf=maybe: protocol.crf must be true or false, got 'maybe'"),
    (["--set", "protocol.eval_re=64"], "unknown key protocol.eval_re for dino on synthetic (did you mean: "
                                       "protocol.eval_res"),
])
def test_bad_request_is_one_line_exit_2_and_nothing_is_made(tmp_path, capsys, extra, message):
    assert _run(tmp_path, *extra) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uss-bench run: error: ") and message in lines[0]
    assert "Traceback" not in captured.err
    assert not (tmp_path / "results").exists()  # no record, no manifest
    assert not (tmp_path / "data").exists()  # the synthetic data was not generated


def test_config_error_comes_before_the_launcher(tmp_path, capsys):
    """A local sweep is refused the same way: nothing is submitted."""
    assert _run(tmp_path, "--executor", "local", "--set", "train.steps=-5") == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "results").exists()


def _rows(out: str) -> dict[str, tuple[str, str]]:
    """setting -> (value, source) from the view's table."""
    rows = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].split(".")[0] in ("train", "probes", "hparams", "protocol"):
            rows[parts[0]] = (parts[1], parts[2].strip())
    return rows


# One real dataset per method (cards only: nothing on disk), the published values written by hand.
VIEWS = [
    (["iic", "potsdam", "--protocol", "iic"], {
        "train.train_res": ("200", "published (methods/iic.yaml configs potsdam/vgg-iic)"),
        "protocol.eval_res": ("200", "protocol (datasets/potsdam.yaml protocols.iic)"),
        "hparams.lr": ("1e-06", "published (methods/iic.yaml configs potsdam/vgg-iic)")}),
    (["picie", "cityscapes27", "--protocol", "picie"], {
        "train.train_res": ("640", "published (methods/picie.yaml configs cityscapes27/resnet18-fpn)"),
        "hparams.lr": ("0.001", "published (methods/picie.yaml configs cityscapes27/resnet18-fpn)"),
        "protocol.image_interpolation": ("bilinear", "protocol (picie)")}),
    (["stego", "cocostuff27", "--protocol", "stego"], {
        "train.train_res": ("224", "card (methods/stego.yaml)"),
        "hparams.rand_shift": ("0.66", "published (methods/stego.yaml configs cocostuff27/vit-s8)"),
        "protocol.flip_tta": ("true", "protocol (stego)")}),
    (["hp", "cocostuff27", "--protocol", "hp"], {
        "hparams.tau": ("0.8", "published (methods/hp.yaml configs cocostuff27/vit-s8)"),
        "protocol.eval_res": ("320", "protocol (hp)")}),
    (["ppap", "potsdam3", "--backbone", "vit-b8", "--protocol", "ppap"], {
        "hparams.tau": ("0.07", "published (methods/ppap.yaml configs potsdam3/vit-b8)")}),
    (["hsg", "cityscapes27", "--protocol", "hsg-knn"], {
        "train.train_res": ("448", "published (methods/hsg.yaml configs cityscapes*/fcn-resnet50)"),
        "hparams.optimizer.lr": ("0.1", "published (methods/hsg.yaml configs cityscapes*/fcn-resnet50)")}),
    (["san", "cocostuff27"], {
        "train.train_res": ("128", "card (methods/san.yaml)"),
        "protocol.eval_res": ("320", "protocol (uss)")}),
    (["dino", "cocostuff27", "--set", "train.steps=9"], {
        "train.steps": ("9", "set"),
        "train.train_res": ("224", "card (methods/dino.yaml)")}),
]


@pytest.mark.parametrize("argv,expected", VIEWS, ids=[v[0][0] for v in VIEWS])
def test_config_view_shows_each_value_with_its_layer(capsys, argv, expected):
    assert main(["config", *argv]) == 0
    out = capsys.readouterr().out
    rows = _rows(out)
    assert {key: rows[key] for key in expected} == expected
    assert "layers, lowest first" in out and "5. preset" in out


def test_config_view_smoke_and_json(capsys):
    assert main(["config", "picie", "cocostuff27", "--preset", "smoke", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["values"]["train.train_res"] == {"value": 64,
                                                "source": "preset (datasets/cocostuff27.yaml presets.smoke)"}
    assert data["values"]["hparams.lr"]["source"] == "preset (methods/picie.yaml presets.smoke)"
    assert data["layers"] == ["harness", "card", "published", "protocol", "preset", "set"]


@pytest.mark.parametrize("argv,message", [
    (["dnio", "cocostuff27"], "unknown method 'dnio' (did you mean: dino?)"),
    (["iic", "cocostuff27", "--backbone", "vit-s8"], "method 'iic' does not run on backbone 'vit-s8'"),
    (["dino", "cocostuff27", "--preset", "smok"], "unknown preset 'smok'"),
    (["dino", "cocostuff27", "--set", "hparams.tau=0.5"], "dino defines no hparams keys"),
])
def test_config_view_errors_are_one_line(capsys, argv, message):
    assert main(["config", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("uss-bench config: error: ")
