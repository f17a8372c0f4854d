"""Figures on synthetic records: a qualitative grid from saved prediction PNGs and a table bar chart."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from results_factories import make_record, write_records

from uss_bench.cli import main
from uss_bench.results.figures import (
    CELL_INCHES,
    DPI,
    FigureError,
    colorize,
    label_colormap,
    prediction_path,
    qualitative_grid,
)

IDS = ["00000", "00003", "00007", "00011"]  # the synthetic card's figure_ids


def test_colormap_is_pascal_and_ignore_is_black():
    cmap = label_colormap(4)
    assert cmap.tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    rgb = colorize(np.array([[0, 1], [-1, 255]]))
    assert rgb[0, 0].tolist() == [128, 0, 0] and rgb[0, 1].tolist() == [0, 128, 0]
    assert rgb[1].tolist() == [[0, 0, 0], [0, 0, 0]]


@pytest.fixture()
def sweep(tmp_path):
    results = write_records(tmp_path / "res", [
        make_record("stego1", method="stego", dataset="synthetic", metrics={"cluster": {"acc": 40.0}}),
        make_record("hp1", method="hp", dataset="synthetic", metrics={"cluster": {"acc": 45.0}}),
    ])
    for run_id in ("stego1", "hp1"):
        for index, image_id in enumerate(IDS):
            path = prediction_path(results, run_id, image_id)
            path.parent.mkdir(parents=True, exist_ok=True)
            pred = np.full((64, 64), index, dtype=np.uint8)
            pred[:8] = 255
            Image.fromarray(pred).save(path)
    return results, tmp_path / "data"


def test_grid_png_has_the_expected_size(sweep, tmp_path):
    results, data_root = sweep
    out = qualitative_grid(results, "synthetic", ["stego", "hp"], data_root, tmp_path / "grid.png", preset="smoke")
    with Image.open(out) as img:
        assert img.size == (int(4 * CELL_INCHES * DPI), int(4 * CELL_INCHES * DPI))  # 4 columns x 4 figure ids


def test_grid_errors_name_the_missing_thing(sweep, tmp_path):
    results, data_root = sweep
    prediction_path(results, "hp1", "00007").unlink()
    with pytest.raises(FigureError, match=r"missing saved prediction .*predictions/hp1/00007.png"):
        qualitative_grid(results, "synthetic", ["hp"], data_root, tmp_path / "g.png", preset="smoke")
    with pytest.raises(FigureError, match="no completed run of ppap on synthetic"):
        qualitative_grid(results, "synthetic", ["ppap"], data_root, tmp_path / "g.png", preset="smoke")
    with pytest.raises(FigureError, match="figure id.* 99999 not in synthetic"):
        qualitative_grid(results, "synthetic", ["hp"], data_root, tmp_path / "g.png", ids=["99999"], preset="smoke")


def test_figure_command(sweep, tmp_path, capsys):
    results, data_root = sweep
    out = tmp_path / "cli-grid.png"
    assert main(["figure", "--dataset", "synthetic", "--methods", "hp", "--results", str(results),
                 "--data-root", str(data_root), "--preset", "smoke", "--ids", "00000,00003", "--out", str(out)]) == 0
    with Image.open(out) as img:
        assert img.size == (int(3 * CELL_INCHES * DPI), int(2 * CELL_INCHES * DPI))
    bars = tmp_path / "bars.png"
    assert main(["figure", "--table", "ppap-t1", "--results", str(results), "--out", str(bars)]) == 0
    with Image.open(bars) as img:
        assert img.size[0] > 600 and img.size[1] == 450
    assert main(["figure", "--dataset", "synthetic", "--results", str(results)]) == 2
