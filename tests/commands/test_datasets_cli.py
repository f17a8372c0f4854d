"""`uss-bench datasets fixture|check|prepare` and the up-front data check of `uss-bench run`."""

import numpy as np
import pytest

from uss_bench.cli import main
from uss_bench.registry import DATASETS


def test_fixture_then_check_passes_and_breaking_it_fails(tmp_path, capsys):
    assert main(["datasets", "fixture", "potsdam3", "--out", str(tmp_path)]) == 0
    assert main(["datasets", "check", "potsdam3", "--data-root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("potsdam3: OK (train 3, val 2")
    missing = tmp_path / "potsdam" / "gt" / "4.mat"
    missing.unlink()
    assert main(["datasets", "check", "potsdam3", "--data-root", str(tmp_path), "--full"]) == 1
    line = capsys.readouterr().out.strip()
    assert line.startswith("potsdam3: FAILED") and str(missing) in line and "potsdam.zip" in line


def test_check_all_prints_one_line_per_dataset(tmp_path, capsys):
    assert main(["datasets", "check", "--data-root", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == DATASETS.names()
    assert sum("FAILED" in line for line in lines) == len(DATASETS.names()) - 1  # synthetic generates itself


def test_prepare_five_crop_cli(tmp_path, capsys):
    assert main(["datasets", "fixture", "cityscapes27", "--out", str(tmp_path)]) == 0
    assert main(["datasets", "prepare", "cityscapes27", "--splits", "val", "--data-root", str(tmp_path)]) == 0
    assert (tmp_path / "cropped" / "cityscapes_five_crop_0.5" / "label" / "val" / "9.png").is_file()
    assert main(["datasets", "prepare", "cityscapes27", "--what", "knn", "--splits", "val_five_crop_0.5",
                 "--weights-dir", str(tmp_path / "none"), "--data-root", str(tmp_path)]) == 2
    assert "missing DINO weights for vit-s8" in capsys.readouterr().err


@pytest.mark.slow
def test_prepare_knn_cli_with_a_random_vit(tmp_path):
    """A random-init ViT-S/8 smoke run of the precompute (a few seconds on CPU); the name carries the patch size."""
    assert main(["datasets", "fixture", "cityscapes27", "--out", str(tmp_path)]) == 0
    assert main(["datasets", "prepare", "cityscapes27", "--splits", "val", "--data-root", str(tmp_path)]) == 0
    assert main(["datasets", "prepare", "cityscapes27", "--what", "knn", "--splits", "val_five_crop_0.5",
                 "--random-init", "--device", "cpu", "--data-root", str(tmp_path)]) == 0
    table = tmp_path / "nns" / "nns_vit-s8_cityscapes27_val_five_224.npz"
    assert np.load(table)["nns"].shape == (10, 10)


def test_run_fails_up_front_listing_every_missing_dataset(tmp_path, capsys):
    code = main(["run", "--methods", "dino", "--datasets", "all", "--random-init", "--preset", "smoke",
                 "--data-root", str(tmp_path / "data"), "--results", str(tmp_path / "results")])
    assert code == 2
    err = capsys.readouterr().err
    listed = {line.strip()[2:].split(":")[0] for line in err.splitlines() if line.strip().startswith("- ")}
    assert listed == set(DATASETS.names()) - {"synthetic"}
    assert "nothing was run" in err and not (tmp_path / "results" / "runs").exists()
