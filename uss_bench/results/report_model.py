"""What the report site shows, as plain data for its templates: per-table cells with their ``check`` verdict,
per-table counts, and one view per run record. No HTML here (templates in ``report_templates/``).

A cell's verdict is the regression check's (:func:`uss_bench.results.check.against_reported`) for the same
reported value, so the site and ``uss-bench check`` can never disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from uss_bench.results.check import RESULT_COLUMNS, Tolerance, against_reported
from uss_bench.results.tables import NOT_REPORTED, UNKNOWN_MARK, TableLayout, _fmt, build_cells

# verdict -> (css class, words shown to the reader)
VERDICTS = {
    "ok": ("ok", "within tolerance"),
    "fail": ("fail", "out of tolerance"),
    "uncompared": ("uncompared", "reproduced, not compared (the paper does not state its CRF or protocol)"),
    "not-run": ("not-run", "not run"),
    "reported-only": ("reported-only", "uss-bench cannot run this row"),
    "none": ("none", ""),
}
COUNT_KEYS = ("reproduced", "within tolerance", "out of tolerance", "not run")
CELL_KEY = ["method", "variant", "backbone", "dataset", "metric"]
CLASS_FIELD = RESULT_COLUMNS.index("class")


@dataclass
class CellView:
    column: str
    reported: str
    reproduced: str  # "mean ± std (n=…)" or ""
    delta: str
    verdict: str  # a key of VERDICTS
    tolerance: str
    run_ids: list[str]
    note: str

    @property
    def css(self) -> str:
        return VERDICTS[self.verdict][0]

    @property
    def verdict_text(self) -> str:
        return VERDICTS[self.verdict][1]


@dataclass
class RowView:
    label: str
    backbone: str
    status: str
    cells: list[CellView]


@dataclass
class TableView:
    name: str
    caption: str
    citation: str
    columns: list[str]
    rows: list[RowView]
    counts: dict[str, int]
    footnotes: list[str] = field(default_factory=list)
    layout: TableLayout | None = None
    cells: pd.DataFrame | None = None  # build_cells' frame, reused by the figures


def _verdicts(layout: TableLayout, reported: pd.DataFrame, agg: pd.DataFrame, tol: Tolerance) -> dict[tuple, Any]:
    """(method, variant, backbone, dataset, metric) -> the check's compared row for this table."""
    result = against_reported(reported, agg, tol, tables={(layout.paper, layout.table)})
    return {tuple(getattr(r, k) for k in CELL_KEY): r for r in result.compared.itertuples(index=False)}


def _reproduced_text(cell: pd.Series) -> str:
    if cell["n"] <= 0:
        return ""
    spread = f" ± {_fmt(cell['std'])}" if cell["n"] > 1 and not math.isnan(cell["std"]) else ""
    return f"{_fmt(cell['mean'])}{spread} (n={int(cell['n'])})"


def cell_view(cell: pd.Series, compared: Any | None) -> CellView:
    state = cell["reported_state"]
    reported = _fmt(cell["reported"]) if state == "value" else (UNKNOWN_MARK if state == "unknown" else NOT_REPORTED)
    has_runs = cell["n"] > 0
    tolerance = ""
    if compared is not None:
        verdict = "ok" if bool(compared.ok) else "fail"
        tolerance = f"±{compared.tolerance:.2f} ({compared[CLASS_FIELD]})"  # 'class' is a keyword: by position
    elif has_runs and state == "value":
        verdict = "uncompared"
    elif has_runs:
        verdict = "none"
    elif cell["row_status"] == "reported only":
        verdict = "reported-only"
    elif state == "value":
        verdict = "not-run"
    else:
        verdict = "none"
    run_ids = [r for r in str(cell.get("run_ids", "") or "").split(",") if r]
    delta = _fmt(cell["delta"], signed=True) if not math.isnan(cell["delta"]) else ""
    return CellView(cell["column"], reported, _reproduced_text(cell), delta, verdict, tolerance, run_ids,
                    str(cell["note"]))


def count_cells(cells: list[CellView]) -> dict[str, int]:
    """Cells with reproduced numbers, how many of them pass or fail the check, and runnable cells not run yet."""
    return {
        "reproduced": sum(bool(c.reproduced) for c in cells),
        "within tolerance": sum(c.verdict == "ok" for c in cells),
        "out of tolerance": sum(c.verdict == "fail" for c in cells),
        "not run": sum(c.verdict == "not-run" for c in cells),
        "reported only": sum(c.verdict == "reported-only" for c in cells),
        "unknown reported": sum(c.reported == UNKNOWN_MARK for c in cells),
    }


def table_view(layout: TableLayout, reported: pd.DataFrame, agg: pd.DataFrame, tol: Tolerance | None = None,
               any_protocol: bool = False) -> TableView:
    from uss_bench.results.tables import footer, source_citation

    tol = tol or Tolerance()
    cells = build_cells(layout, reported, agg, any_protocol)
    verdicts = _verdicts(layout, reported, agg, tol)
    rows = []
    for _, group in cells.groupby("row", sort=True):
        first = group.iloc[0]
        views = [cell_view(c, verdicts.get(tuple(c[k] for k in CELL_KEY))) for _, c in group.iterrows()]
        rows.append(RowView(first["label"], first["backbone"], first["row_status"] or "reproduced", views))
    all_cells = [c for r in rows for c in r.cells]
    return TableView(layout.name, layout.caption, source_citation(layout), [c.label for c in layout.columns], rows,
                     count_cells(all_cells), footer(layout, cells)[1:], layout, cells)


# ---- runs ------------------------------------------------------------------------------------------

@dataclass
class RunView:
    run_id: str
    title: str
    status: str
    record: dict[str, Any]
    summary: list[tuple[str, str]]  # (metric, value) of the headline numbers
    per_class: dict[str, list[tuple[str, float]]]  # section -> [(class, IoU)] sorted, highest first
    predictions: list[dict[str, str]] = field(default_factory=list)  # {"image_id", "src"} relative to the page


HEADLINE = ("acc", "miou")


def run_title(record: dict[str, Any]) -> str:
    spec = record.get("spec", {})
    init = " (random init)" if spec.get("random_init") else ""
    return (f"{spec.get('method')} · {spec.get('backbone')}{init} · {spec.get('dataset')} · seed {spec.get('seed')} · "
            f"{(record.get('protocol') or {}).get('name') or spec.get('protocol')}")


def run_view(record: dict[str, Any]) -> RunView:
    metrics = record.get("metrics") or {}
    summary, per_class = [], {}
    for section, values in metrics.items():
        if not isinstance(values, dict):
            continue
        for key in HEADLINE:
            if isinstance(values.get(key), (int, float)):
                summary.append((f"{section}.{key}", f"{values[key]:.2f}"))
        iou = values.get("iou")
        if isinstance(iou, dict):
            pairs = [(str(k), float(v)) for k, v in iou.items() if isinstance(v, (int, float)) and not math.isnan(v)]
            if pairs:
                per_class[section] = sorted(pairs, key=lambda kv: (-kv[1], kv[0]))
    return RunView(str(record.get("run_id")), run_title(record), str(record.get("status")), record, summary, per_class)


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as dotted (key, value) rows, lists shown inline: every field of a protocol or environment."""
    if isinstance(value, dict):
        if not value:
            return [(prefix, "{}")] if prefix else []
        rows: list[tuple[str, str]] = []
        for key, sub in value.items():
            rows.extend(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    return [(prefix, "null" if value is None else str(value))]
