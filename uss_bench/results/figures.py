"""Figures: a qualitative grid (image | ground truth | each method's prediction) and a reported-vs-reproduced
bar chart of a paper table. PNG through matplotlib's Agg backend.

Predictions are read, not computed: the grid expects ``<results>/predictions/<run_id>/<image_id>.png``,
a single-channel PNG of class ids (after cluster-to-class matching) with 255 = ignore, written by the
evaluation engine. A missing file is one clear error naming it. Images and ground truth come from the
dataset itself through its card's ``eval_split`` and ``figure_ids``.
"""

from __future__ import annotations

import math
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


def colorize(label: np.ndarray) -> np.ndarray:
    """Class ids -> RGB; ignore (negative or 255) is black. Id 0 is shifted so no class is black."""
    label = np.asarray(label).astype(np.int64)
    ignore = (label < 0) | (label == IGNORE)
    cmap = label_colormap(257)
    rgb = cmap[np.clip(label, 0, 255) + 1]
    rgb[ignore] = 0
    return rgb


def prediction_path(results_dir: str | Path, run_id: str, image_id: str) -> Path:
    return Path(results_dir) / "predictions" / run_id / f"{image_id}.png"


def read_prediction(path: Path, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise FigureError(f"missing saved prediction {path} (the engine writes <results>/predictions/<run_id>/"
                          "<image_id>.png; evaluate the run with prediction saving on)")
    with Image.open(path) as img:
        pred = np.asarray(img)
    if pred.ndim != 2:
        raise FigureError(f"prediction {path} must be a single-channel class-id PNG, got shape {pred.shape}")
    if pred.shape != shape:
        raise FigureError(f"prediction {path} is {pred.shape[1]}x{pred.shape[0]} but the image is "
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


def _new_figure(n_rows: int, n_cols: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * CELL_INCHES, n_rows * CELL_INCHES), dpi=DPI,
                             squeeze=False)
    return plt, fig, axes


def draw_grid(rows: list[tuple[np.ndarray, np.ndarray, list[np.ndarray]]], titles: list[str],
              out_path: str | Path) -> Path:
    """Save a grid: one row per image (image, ground truth, predictions...); the size is exact:
    ``len(titles) * CELL_INCHES * DPI`` by ``len(rows) * CELL_INCHES * DPI`` pixels."""
    plt, fig, axes = _new_figure(len(rows), len(titles))
    for r, (image, label, preds) in enumerate(rows):
        panels = [image[..., :3], colorize(label)] + [colorize(p) for p in preds]
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.03, hspace=0.03)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=DPI)
    plt.close(fig)
    return out_path


def qualitative_grid(results_dir: str | Path, dataset: str, methods: list[str], data_root: str | Path,
                     out_path: str | Path, backbone: str | None = None, ids: list[str] | None = None,
                     preset: str = "default") -> Path:
    """Image | ground truth | each method's saved prediction, on the dataset card's ``figure_ids``."""
    from uss_bench.data.build import build_dataset
    from uss_bench.paths import load_card
    from uss_bench.results.records import load_records

    card = load_card("datasets", dataset)
    ids = ids or [str(i) for i in card.get("figure_ids", [])]
    if not ids:
        raise FigureError(f"dataset card {dataset} has no figure_ids; pass --ids")
    split = card.get("eval_split", "val")
    data = build_dataset(dataset, data_root, split, None, preset=preset)
    by_id = {item.id: item for item in data.items}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise FigureError(f"figure id(s) {', '.join(missing)} not in {dataset} split {split!r}")
    records = load_records(results_dir)
    runs = [select_run(records, m, dataset, backbone) for m in methods]
    rows = []
    for image_id in ids:
        image, label = data.load(by_id[image_id])
        preds = [read_prediction(prediction_path(results_dir, run["run_id"], image_id), label.shape)
                 for run in runs]
        rows.append((image, label, preds))
    return draw_grid(rows, ["image", "ground truth", *methods], out_path)


def table_bar_chart(layout: Any, cells: pd.DataFrame, out_path: str | Path) -> Path:
    """Reported vs reproduced bars (reproduced with its std over seeds) for every cell with a reported value."""
    shown = cells[cells["reported_state"] == "value"].reset_index(drop=True)
    if shown.empty:
        raise FigureError(f"table {layout.name} has no known reported values to plot")
    labels = [f"{r.label} ({r.backbone})\n{r.column}" for r in shown.itertuples()]
    plt, fig, axes = _new_figure(1, 1)
    fig.set_size_inches(max(6.0, 0.45 * len(shown)), 4.5)
    ax = axes[0][0]
    x = np.arange(len(shown))
    ax.bar(x - 0.2, shown["reported"], width=0.4, label="reported", color="#9ecae1")
    rep = shown["mean"].to_numpy(dtype=float)
    err = np.nan_to_num(shown["std"].to_numpy(dtype=float))
    ax.bar(x + 0.2, np.nan_to_num(rep), width=0.4, yerr=err, label="reproduced (mean ± std)", color="#3182bd")
    for xi, value, status in zip(x, rep, shown["row_status"]):
        if math.isnan(value):
            ax.text(xi + 0.2, 0.5, status or "no run", rotation=90, ha="center", va="bottom", fontsize=6)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=90, fontsize=6)
    ax.set_ylabel("%")
    ax.set_title(layout.caption, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=DPI)
    plt.close(fig)
    return out_path
