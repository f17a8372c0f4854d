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
    PANEL_WIDTH_INCHES,
    REPORTED_COLOUR,
    REPRODUCED_COLOUR,
    FigureError,
    colorize,
    figure_image_ids,
    label_colormap,
    palette_for,
    prediction_path,
    qualitative_grid,
    resolve_figure_ids,
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


def rgb_of(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def has_colour(rgb: np.ndarray, colour) -> bool:
    return bool((rgb.reshape(-1, 3) == np.asarray(colour)).all(axis=1).any())


def test_grid_columns_and_legend(sweep, tmp_path):
    results, data_root = sweep
    out = qualitative_grid(results, "synthetic", ["stego", "hp"], data_root, tmp_path / "grid.png", preset="smoke")
    rgb = rgb_of(out)
    assert rgb.shape[1] == int(4 * CELL_INCHES * DPI)  # image | ground truth | stego | hp
    assert rgb.shape[0] > int(4 * CELL_INCHES * DPI)  # 4 figure ids + title + legend
    # the legend under the last image row shows every class colour of the synthetic card
    legend = rgb[int(0.3 * DPI) + int(4 * CELL_INCHES * DPI):]
    palette = palette_for("synthetic")
    assert palette.source == "pascal-bitmap" and len(palette.colours) == 6
    assert all(has_colour(legend, c) for c in palette.colours)


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
        assert img.size[0] == int(3 * CELL_INCHES * DPI)
    bars = tmp_path / "bars.png"
    assert main(["figure", "--table", "ppap-t1", "--results", str(results), "--out", str(bars)]) == 0
    rgb = rgb_of(bars)
    assert rgb.shape[1] > 4 * PANEL_WIDTH_INCHES * DPI  # one panel per metric: 4 side by side
    panels = rgb[int(0.5 * DPI):]  # below the title and the colour key
    assert has_colour(panels, _hex(REPORTED_COLOUR)) and not has_colour(panels, _hex(REPRODUCED_COLOUR))  # no runs
    assert main(["figure", "--dataset", "synthetic", "--results", str(results)]) == 2


def _hex(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def test_official_palettes():
    # cityscapesScripts labels.py colours, matched by class name (27-class STEGO split included)
    city = palette_for("cityscapes27")
    assert city.source == "cityscapes"
    assert city.colours[0].tolist() == [128, 64, 128] and city.colours[2].tolist() == [250, 170, 160]  # road, parking
    assert palette_for("cityscapes19").colours[18].tolist() == [119, 11, 32]  # bicycle
    assert palette_for("kitti-step").source == "cityscapes"
    # VOC: background black, aeroplane (128, 0, 0), void (255) cream
    voc = palette_for("voc12")
    assert voc.colours[0].tolist() == [0, 0, 0] and voc.colours[1].tolist() == [128, 0, 0]
    assert colorize(np.array([[255]]), voc)[0, 0].tolist() == [224, 224, 192]
    # ISPRS Potsdam legend: impervious surfaces white, buildings blue, clutter red
    potsdam = palette_for("potsdam")
    assert potsdam.colours[0].tolist() == [255, 255, 255] and potsdam.colours[5].tolist() == [255, 0, 0]
    # an unmatched cluster id beyond the classes is ignore, not a wrapped colour
    assert colorize(np.array([[6]]), palette_for("synthetic"))[0, 0].tolist() == [0, 0, 0]


def test_figure_ids_by_position_and_by_name():
    ids = ["a", "b", "c"]
    assert figure_image_ids(ids, ["#2", "b", "zz", "#9"]) == ["c", "b"]
    assert resolve_figure_ids(ids, ["#0", "c"]) == ["a", "c"]
    with pytest.raises(FigureError, match="zz"):
        resolve_figure_ids(ids, ["zz"])


def test_bar_chart_draws_reproduced_bars(tmp_path):
    from results_factories import make_record, write_records

    from uss_bench.results.figures import table_bar_chart
    from uss_bench.results.tables import build_table

    results = write_records(tmp_path / "res", [
        make_record(f"hp{s}", seed=s, metrics={"cluster_crf": {"acc": 55.0 + s, "miou": 20.0}}) for s in range(3)])
    layout, cells = build_table("ppap-t1", results)
    panels = rgb_of(table_bar_chart(layout, cells, tmp_path / "bars.png"))[int(0.5 * DPI):]
    assert has_colour(panels, _hex(REPRODUCED_COLOUR)) and has_colour(panels, _hex(REPORTED_COLOUR))


def test_every_dataset_card_names_figure_ids():
    """The qualitative grid and the saved predictions work on every benchmark: each card lists its figure images."""
    from uss_bench.paths import load_card
    from uss_bench.registry import DATASETS

    missing = [name for name in DATASETS.names() if not load_card("datasets", name).get("figure_ids")]
    assert missing == []
