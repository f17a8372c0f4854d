"""``uss-bench report``: a static, offline leaderboard site from the run records and the reported numbers.

Layout of the site (every link relative, so the folder opens from disk, moves and zips as a whole)::

    index.html              every paper table with its counts; runs; figures
    style.css               the one stylesheet (no JavaScript, no web fonts, no CDN)
    tables/<name>.html      reported vs reproduced mean ± std (n), signed delta coloured by the check verdict
    runs/<run_id>.html      spec, protocol, environment, per-class IoU bars, saved predictions
    runs/<run_id>/<id>.png  the run's saved predictions, coloured with the dataset's palette
    figures/*.png           bar chart per table with reproduced numbers; qualitative grid per dataset

Pages come from jinja2 templates shipped in ``uss_bench/results/report_templates/``.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("uss_bench.report")

TEMPLATES = "report_templates"


class ReportError(RuntimeError):
    """The site cannot be written (unreadable records or reported numbers); the message says which."""


def default_out_dir(results_dir: str | Path) -> Path:
    return Path(results_dir) / "report"


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("uss_bench.results", TEMPLATES), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct_width"] = lambda v: f"{max(0.0, min(100.0, float(v))):.2f}"
    return env


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _prediction_images(results_dir: Path, record: dict[str, Any], site: Path) -> list[dict[str, str]]:
    """Colour the run's saved class-id PNGs with its dataset's palette into the site; [] when none were saved."""
    import numpy as np
    from PIL import Image

    from uss_bench.results.figures import colorize, palette_for

    source = Path(results_dir) / "predictions" / str(record["run_id"])
    if not source.is_dir():
        return []
    dataset = record.get("spec", {}).get("dataset", "")
    palette = palette_for(dataset)
    out = []
    for path in sorted(source.glob("*.png")):
        with Image.open(path) as img:
            pred = np.asarray(img)
        if pred.ndim != 2:
            continue
        target = site / "runs" / str(record["run_id"]) / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(colorize(pred, palette)).save(target)
        out.append({"image_id": path.stem, "src": f"{record['run_id']}/{path.name}"})
    return out


def _figures(results_dir: Path, site: Path, views: list[Any], records: list[dict[str, Any]],
             data_root: Path | None) -> tuple[list[dict[str, str]], list[str]]:
    """Bar chart of each table with reproduced cells, and a qualitative grid per dataset with saved predictions.

    A figure that cannot be drawn (no data on this machine, say) is listed with its reason, never fatal.
    """
    from uss_bench.data.base import DatasetError
    from uss_bench.results import figures

    made, skipped = [], []
    for view in views:
        if not view.counts["reproduced"]:
            continue
        name = f"{view.name}.png"
        try:
            figures.table_bar_chart(view.layout, view.cells, site / "figures" / name)
            made.append({"src": f"figures/{name}", "caption": f"{view.name}: reported and reproduced"})
        except figures.FigureError as exc:
            skipped.append(f"{view.name}: {exc}")
    by_dataset: dict[tuple[str, str], list[str]] = {}  # (dataset, preset) -> methods with saved predictions
    for rec in records:
        spec = rec.get("spec", {})
        key = (str(spec.get("dataset")), str(spec.get("preset") or "default"))
        has_preds = (results_dir / "predictions" / str(rec.get("run_id"))).is_dir()
        if rec.get("status") == "completed" and has_preds and spec.get("method") not in by_dataset.get(key, []):
            by_dataset.setdefault(key, []).append(str(spec.get("method")))
    for (dataset, preset), methods in sorted(by_dataset.items()):
        if data_root is None:
            skipped.append(f"{dataset} qualitative grid: no --data-root given")
            continue
        name = f"{dataset}-grid.png" if preset == "default" else f"{dataset}-{preset}-grid.png"
        try:
            figures.qualitative_grid(results_dir, dataset, sorted(methods), data_root, site / "figures" / name,
                                     preset=preset)
            made.append({"src": f"figures/{name}", "caption": f"{dataset}: image | ground truth | "
                         + " | ".join(sorted(methods))})
        except (figures.FigureError, DatasetError, FileNotFoundError, ValueError) as exc:
            skipped.append(f"{dataset} qualitative grid: {exc}")
    return made, skipped


def build_report(results_dir: str | Path, out_dir: str | Path | None = None, *, reported_dir: str | Path | None = None,
                 data_root: str | Path | None = None, tables: list[str] | None = None,
                 draw_figures: bool = True) -> Path:
    """Write the site; returns the path of its ``index.html``. The output folder is replaced as a whole."""
    from uss_bench.registry import TABLES
    from uss_bench.results.export import records_frame
    from uss_bench.results.records import load_records
    from uss_bench.results.report_model import COUNT_KEYS, flatten, run_view, table_view
    from uss_bench.results.reported import ReportedError, load_reported
    from uss_bench.results.reproduced import aggregate

    results_dir = Path(results_dir)
    site = Path(out_dir) if out_dir is not None else default_out_dir(results_dir)
    try:
        records = load_records(results_dir) if (results_dir / "runs").is_dir() else []
        reported = load_reported(reported_dir)
    except (ValueError, ReportedError) as exc:
        raise ReportError(str(exc)) from exc
    agg = aggregate(records_frame(records))
    names = tables if tables is not None else sorted(TABLES.names())
    views = [table_view(TABLES.get(n), reported, agg) for n in names]

    tmp = site.with_name(f".{site.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "tables").mkdir(parents=True)
    env = _environment()
    generated = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    base = {"generated": generated, "results_dir": str(results_dir)}

    runs = []
    for record in sorted(records, key=lambda r: (str(r.get("spec", {}).get("dataset")), str(r.get("run_id")))):
        view = run_view(record)
        view.predictions = _prediction_images(results_dir, record, tmp)
        runs.append(view)
        _write(tmp / "runs" / f"{view.run_id}.html", env.get_template("run.html").render(
            **base, root="../", run=view, spec=flatten(record.get("spec", {})),
            protocol=flatten(record.get("protocol") or {}), environment=flatten(record.get("environment") or {}),
            train=flatten({k: v for k, v in (record.get("train") or {}).items() if k != "val_history"}),
            timings=flatten(record.get("timings") or {}), error=record.get("error")))
    known_runs = {r.run_id for r in runs}
    for view in views:
        _write(tmp / "tables" / f"{view.name}.html", env.get_template("table.html").render(
            **base, root="../", table=view, known_runs=known_runs))
    made, skipped = _figures(results_dir, tmp, views, records, Path(data_root) if data_root else None) \
        if draw_figures else ([], [])
    totals = {k: sum(v.counts[k] for v in views) for k in views[0].counts} if views else {}
    _write(tmp / "index.html", env.get_template("index.html").render(
        **base, root="", tables=views, runs=runs, count_keys=COUNT_KEYS, totals=totals, figures=made,
        skipped_figures=skipped))
    shutil.copyfile(Path(__file__).with_name(TEMPLATES) / "style.css", tmp / "style.css")
    if site.exists():
        shutil.rmtree(site)
    tmp.replace(site)
    return site / "index.html"


def refresh_report(results_dir: str | Path, data_root: str | Path | None = None) -> Path | None:
    """Rebuild ``<results>/report`` at the end of a sweep and print where it is; a failure only warns.

    Called by ``run`` and ``collect``; the sweep's result is the records, the site is a view of them.
    """
    try:
        index = build_report(results_dir, data_root=data_root)
    except Exception as exc:  # noqa: BLE001 - the sweep succeeded; a broken view must not fail it
        print(f"report: not refreshed ({type(exc).__name__}: {exc}); run `uss-bench report` to see why",
              file=sys.stderr)
        return None
    print(f"report: {index}")
    return index
