"""Figures: a qualitative grid (image | ground truth | each method's prediction) and a reported-vs-reproduced
bar chart of a paper table. PNG through matplotlib's Agg backend.

Predictions are read, not computed: the grid expects ``<results>/predictions/<run_id>/<image_id>.png``,
a single-channel PNG of class ids (after cluster-to-class matching) with 255 = ignore, written by the
evaluation engine. A missing file is one clear error naming it. Images and ground truth come from the
dataset itself through its card's ``eval_split`` and ``figure_ids``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

IGNORE = 255
CELL_INCHES = 2.0
DPI = 100


class FigureError(RuntimeError):
    """Missing predictions, runs or figure ids; the message names what and where."""


def label_colormap(n: int = 256) -> np.ndarray:
    """The PASCAL VOC bit-interleaved label colormap (the one STEGO-style figures use), uint8 [n, 3]."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for index in range(n):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        cmap[index] = (r, g, b)
    return cmap


# Official colours by class name: cityscapesScripts' labels.py (all 34 labels, so the 27-class STEGO split and
# KITTI-STEP's Cityscapes classes find theirs) and the ISPRS Potsdam legend.
CITYSCAPES_COLOURS = {
    "road": (128, 64, 128), "sidewalk": (244, 35, 232), "parking": (250, 170, 160), "rail track": (230, 150, 140),
    "building": (70, 70, 70), "wall": (102, 102, 156), "fence": (190, 153, 153), "guard rail": (180, 165, 180),
    "bridge": (150, 100, 100), "tunnel": (150, 120, 90), "pole": (153, 153, 153), "polegroup": (153, 153, 153),
    "traffic light": (250, 170, 30), "traffic sign": (220, 220, 0), "vegetation": (107, 142, 35),
    "terrain": (152, 251, 152), "sky": (70, 130, 180), "person": (220, 20, 60), "rider": (255, 0, 0),
    "car": (0, 0, 142), "truck": (0, 0, 70), "bus": (0, 60, 100), "caravan": (0, 0, 90), "trailer": (0, 0, 110),
    "train": (0, 80, 100), "motorcycle": (0, 0, 230), "bicycle": (119, 11, 32),
}
POTSDAM_COLOURS = [(255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)]
VOC_IGNORE = (224, 224, 192)  # VOC's boundary/void colour (label 255)
BLACK = (0, 0, 0)


@dataclass(frozen=True)
class Palette:
    """Colours of a dataset's classes (row k = class k) and of ignore / unmatched pixels."""

    colours: np.ndarray  # uint8 [n_classes, 3]
    ignore: tuple[int, int, int]
    source: str  # "cityscapes", "voc", "isprs", or "pascal-bitmap" (the generic map, class k -> entry k+1)


def palette_for(dataset: str, classes: list[str] | None = None) -> Palette:
    """The dataset's official colour map where one exists (Cityscapes, KITTI-STEP, VOC, Potsdam-6).

    Other datasets get the PASCAL bit-interleaved map shifted by one, so no class is black and black means ignore.
    """
    if classes is None:
        from uss_bench.paths import load_card

        classes = [str(c) for c in load_card("datasets", dataset).get("classes", [])]
    n = max(1, len(classes))
    if classes and all(c in CITYSCAPES_COLOURS for c in classes):
        return Palette(np.array([CITYSCAPES_COLOURS[c] for c in classes], dtype=np.uint8), BLACK, "cityscapes")
    if dataset.startswith("voc"):
        return Palette(label_colormap(n), VOC_IGNORE, "voc")
    if dataset == "potsdam" and n == len(POTSDAM_COLOURS):
        return Palette(np.array(POTSDAM_COLOURS, dtype=np.uint8), BLACK, "isprs")
    return Palette(label_colormap(n + 1)[1:], BLACK, "pascal-bitmap")


def colorize(label: np.ndarray, palette: Palette | None = None) -> np.ndarray:
    """Class ids -> RGB with ``palette`` (default: the generic shifted PASCAL map); ignore (< 0, 255 or any id
    outside the palette, e.g. an unmatched cluster) gets the palette's ignore colour."""
    label = np.asarray(label).astype(np.int64)
    if palette is None:
        palette = Palette(label_colormap(256)[1:], BLACK, "pascal-bitmap")
    n = len(palette.colours)
    ignore = (label < 0) | (label >= n)
    rgb = palette.colours[np.clip(label, 0, n - 1)].copy()
    rgb[ignore] = palette.ignore
    return rgb


def prediction_path(results_dir: str | Path, run_id: str, image_id: str) -> Path:
    return Path(results_dir) / "predictions" / run_id / f"{image_id}.png"


def read_prediction(path: Path, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise FigureError(f"missing saved prediction {path}: a run saves <results>/predictions/<run_id>/<image_id>.png "
                          "for the dataset card's figure_ids when it is evaluated; add the id to the card's "
                          "figure_ids and evaluate again (`uss-bench run ... --force`), or pick saved ids with --ids")
    with Image.open(path) as img:
        pred = np.asarray(img)
    if pred.ndim != 2:
        raise FigureError(f"prediction {path} must be a single-channel class-id PNG, got shape {pred.shape}")
    if pred.shape != shape:
        raise FigureError(f"prediction {path} is {pred.shape[1]}x{pred.shape[0]} but the evaluated image is "
                          f"{shape[1]}x{shape[0]}")
    return pred


def select_run(records: list[dict[str, Any]], method: str, dataset: str, backbone: str | None = None) -> dict:
    """The newest completed record of ``method`` on ``dataset`` (and ``backbone`` if given)."""
    hits = [r for r in records if r.get("status") == "completed" and r.get("spec", {}).get("method") == method
            and r["spec"].get("dataset") == dataset and (backbone is None or r["spec"].get("backbone") == backbone)]
    if not hits:
        what = f"{method} on {dataset}" + (f" with {backbone}" if backbone else "")
        raise FigureError(f"no completed run of {what} in the results directory")
    return max(hits, key=lambda r: str(r.get("created", "")))


def _resolve(item_ids: list[str], wanted: list[str]) -> tuple[list[str], list[str]]:
    known = set(item_ids)
    out, missing = [], []
    for entry in map(str, wanted):
        if entry.startswith("#") and entry[1:].isdigit() and int(entry[1:]) < len(item_ids):
            out.append(item_ids[int(entry[1:])])
        elif entry in known:
            out.append(entry)
        else:
            missing.append(entry)
    return out, missing


def figure_image_ids(item_ids: list[str], card_figure_ids: list[Any]) -> list[str]:
    """The image ids whose predictions a run saves: the card's ``figure_ids`` (an id, or ``#k`` = position k of the
    evaluated split) that exist in the split; absent ones are skipped (a smoke preset has few images)."""
    return _resolve(item_ids, [str(i) for i in card_figure_ids])[0]


def resolve_figure_ids(item_ids: list[str], wanted: list[str], where: str = "the split") -> list[str]:
    """Card-style ids (an image id, or ``#k`` = position k of the split) -> image ids; unknown ones are an error."""
    out, missing = _resolve(item_ids, wanted)
    if missing:
        raise FigureError(f"figure id(s) {', '.join(missing)} not in {where} ({len(item_ids)} images; '#k' = the "
                          "k-th image)")
    return out


def _new_figure(n_rows: int, n_cols: int, width: float | None = None, height: float | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width or n_cols * CELL_INCHES, height or n_rows * CELL_INCHES),
                             dpi=DPI, squeeze=False)
    return plt, fig, axes


LEGEND_ROW_INCHES = 0.28


def legend_columns(names: list[str], width_inches: float) -> int:
    """How many legend entries fit side by side at 9 pt (about 0.075 in per character plus the colour patch)."""
    widest = max(len(n) for n in names) * 0.075 + 0.5
    return max(1, min(len(names), int(width_inches / widest)))


def draw_grid(rows: list[tuple[np.ndarray, np.ndarray, list[np.ndarray]]], titles: list[str],
              out_path: str | Path, palette: Palette | None = None, classes: list[str] | None = None) -> Path:
    """Save a grid: one row per image (image, ground truth, predictions...), and a legend of class colours with
    names under it when ``classes`` is given. Image cells are ``CELL_INCHES`` square at ``DPI``: the width is
    ``len(titles) * CELL_INCHES * DPI`` pixels, the height that of the rows plus the legend."""
    from matplotlib.patches import Patch

    palette = palette or Palette(label_colormap(256)[1:], BLACK, "pascal-bitmap")
    entries = [(name, palette.colours[i]) for i, name in enumerate(classes or [])]
    if entries:
        entries.append(("ignore / unmatched", np.array(palette.ignore, dtype=np.uint8)))
    n_legend_cols = legend_columns([name for name, _ in entries], len(titles) * CELL_INCHES) if entries else 1
    n_legend = math.ceil(len(entries) / n_legend_cols) if entries else 0
    title_in, legend_in = 0.3, n_legend * LEGEND_ROW_INCHES + (0.1 if entries else 0)
    height = len(rows) * CELL_INCHES + title_in + legend_in
    plt, fig, axes = _new_figure(len(rows), len(titles), height=height)
    for r, (image, label, preds) in enumerate(rows):
        panels = [image[..., :3], colorize(label, palette)] + [colorize(p, palette) for p in preds]
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=11)
    bottom = legend_in / height
    fig.subplots_adjust(left=0.01, right=0.99, bottom=bottom + 0.005, top=1 - title_in / height, wspace=0.03,
                        hspace=0.03)
    if entries:
        handles = [Patch(facecolor=np.asarray(rgb) / 255.0, edgecolor="#444", linewidth=0.5, label=name)
                   for name, rgb in entries]
        fig.legend(handles=handles, loc="lower center", ncol=n_legend_cols, fontsize=9,
                   frameon=False, handlelength=1.2, columnspacing=1.0, bbox_to_anchor=(0.5, 0.0))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=DPI)
    plt.close(fig)
    return out_path


def _eval_transform(record: dict[str, Any]):
    """The transform the run evaluated with (its recorded protocol), so image, label and prediction align."""
    from uss_bench.data.transforms import SegTransform

    protocol = record.get("protocol") or {}
    if "eval_res" not in protocol:
        return None
    return SegTransform(int(protocol["eval_res"]), protocol.get("crop", "center"),
                        protocol.get("image_interpolation", "nearest"))


def qualitative_grid(results_dir: str | Path, dataset: str, methods: list[str], data_root: str | Path,
                     out_path: str | Path, backbone: str | None = None, ids: list[str] | None = None,
                     preset: str = "default") -> Path:
    """Image | ground truth | each method's saved prediction, on the dataset card's ``figure_ids`` (or ``ids``),
    in the dataset's official colours with a legend of class names."""
    from uss_bench.data.build import build_dataset
    from uss_bench.paths import load_card
    from uss_bench.results.records import load_records

    card = load_card("datasets", dataset)
    wanted = ids or [str(i) for i in card.get("figure_ids", [])]
    if not wanted:
        raise FigureError(f"dataset card {dataset} has no figure_ids; pass --ids")
    records = load_records(results_dir)
    runs = [select_run(records, m, dataset, backbone) for m in methods]
    split = (runs[0].get("protocol") or {}).get("eval_split") or card.get("eval_split", "val")
    data = build_dataset(dataset, data_root, split, _eval_transform(runs[0]), preset=preset)
    item_ids = [item.id for item in data.items]
    chosen = resolve_figure_ids(item_ids, wanted, f"{dataset} split {split!r}")
    position = {image_id: i for i, image_id in enumerate(item_ids)}
    rows = []
    for image_id in chosen:
        sample = data[position[image_id]]
        image = sample["image"].numpy().transpose(1, 2, 0)
        label = sample["label"].numpy()
        preds = [read_prediction(prediction_path(results_dir, run["run_id"], image_id), label.shape)
                 for run in runs]
        rows.append((image, label, preds))
    classes = list(data.classes)
    return draw_grid(rows, ["image", "ground truth", *methods], out_path, palette_for(dataset, classes), classes)


# ---- bar chart of a paper table -------------------------------------------------------------------

REPORTED_COLOUR = "#9ecae1"
REPRODUCED_COLOUR = "#2b6cb0"
BAR_ROW_INCHES = 0.34
PANEL_WIDTH_INCHES = 4.6
MAX_PANEL_COLUMNS = 4


def _panel_label(column: str, datasets: set[str], dataset: str) -> str:
    return f"{column} ({dataset})" if len(datasets) > 1 and dataset not in column else column


def table_bar_chart(layout: Any, cells: pd.DataFrame, out_path: str | Path) -> Path:
    """One panel per column of the table (a metric on a dataset); in each, the table's rows as horizontal bars in
    the paper's order, grouped by backbone, reported (light) beside reproduced mean (dark) with ±std whiskers.

    ``?`` marks a reported value that is unknown; a row without reproduced runs says so next to its bar.
    """
    known = cells[cells["reported_state"].isin(["value", "unknown"]) | (cells["n"] > 0)]
    if known.empty:
        raise FigureError(f"table {layout.name} has no reported or reproduced values to plot")
    columns = [c for c in dict.fromkeys(cells["column"]) if c in set(known["column"])]
    datasets = set(cells["dataset"])
    # rows in paper order; each backbone group opens with a header line naming the backbone
    order = cells.drop_duplicates("row").sort_values("row")
    slots: dict[int, float] = {}
    ticks: list[tuple[float, str, bool]] = []  # (y, text, is_group_header)
    y, previous = 0.0, None
    for r in order.itertuples():
        if r.backbone != previous:
            if previous is not None:
                y += 0.3
            ticks.append((y, r.backbone, True))
            y += 0.9
            previous = r.backbone
        slots[r.row] = y
        ticks.append((y, r.label, False))
        y += 1.0
    n_cols = min(MAX_PANEL_COLUMNS, len(columns))
    n_rows = math.ceil(len(columns) / n_cols)
    panel_h = max(1.6, BAR_ROW_INCHES * y + 0.9)
    label_w = 1.9
    plt, fig, axes = _new_figure(n_rows, n_cols, width=label_w + n_cols * PANEL_WIDTH_INCHES,
                                 height=n_rows * panel_h + 0.9)
    for k, ax in enumerate(axes.flat):
        if k >= len(columns):
            ax.set_visible(False)
            continue
        sub = cells[cells["column"] == columns[k]]
        top = 0.0
        for c in sub.itertuples():
            base = slots[c.row]
            if c.reported_state == "value":
                ax.barh(base - 0.2, c.reported, height=0.4, color=REPORTED_COLOUR, edgecolor="#5a8fb8", linewidth=0.4)
                top = max(top, c.reported)
            elif c.reported_state == "unknown":
                ax.text(0.5, base - 0.2, "? (unreadable)", va="center", fontsize=8, color="#555")
            if c.n > 0:
                std = 0.0 if math.isnan(c.std) else c.std
                ax.barh(base + 0.2, c.mean, height=0.4, color=REPRODUCED_COLOUR,
                        xerr=std if c.n > 1 else None, error_kw={"elinewidth": 1, "capsize": 2, "ecolor": "#111"})
                top = max(top, c.mean + std)
            elif c.reported_state == "value":
                ax.text(c.reported + 0.8, base + 0.2, c.row_status or "not run", va="center", fontsize=7,
                        color="#777")
        ax.set_xlim(0, max(10.0, top * 1.18))
        ax.set_ylim(y - 0.4, -0.6)
        ax.set_title(_panel_label(columns[k], datasets, sub["dataset"].iloc[0]), fontsize=11)
        ax.tick_params(axis="x", labelsize=9)
        ax.grid(axis="x", color="#e5e5e5", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_xlabel("%", fontsize=9)
        ax.set_yticks([tick[0] for tick in ticks])
        if k % n_cols == 0:
            ax.set_yticklabels([tick[1] for tick in ticks], fontsize=10)
            for label, (_, _, header) in zip(ax.get_yticklabels(), ticks):
                if header:
                    label.set_fontweight("bold")
                    label.set_color("#444")
        else:
            ax.set_yticklabels([])
        ax.tick_params(axis="y", length=0)
        for tick_y, _, header in ticks[1:]:
            if header:
                ax.axhline(tick_y - 0.55, color="#bbb", linewidth=0.6)
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=REPORTED_COLOUR, label="reported (paper)"),
                        Patch(color=REPRODUCED_COLOUR, label="reproduced, mean ± std over seeds")],
               loc="upper right", fontsize=9, frameon=False, ncol=2)
    fig.suptitle(layout.caption, fontsize=12, x=0.01, ha="left")
    fig.subplots_adjust(left=label_w / (label_w + n_cols * PANEL_WIDTH_INCHES), right=0.98,
                        top=1 - 0.75 / (n_rows * panel_h + 0.9), bottom=0.45 / (n_rows * panel_h + 0.9),
                        wspace=0.08, hspace=0.45 * 1.6 / panel_h + 0.1)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=DPI)
    plt.close(fig)
    return out_path
