"""Paper tables: a YAML layout (rows = method x backbone in the paper's order, columns = dataset x metric)
filled with reported numbers beside reproduced ones (mean ± std over seeds, n, signed delta).

Layouts live in ``results/tables/*.yaml`` and are registered in ``TABLES`` at import, so
``uss-bench list tables`` shows them. Building a table never runs anything: it reads records.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from tabulate import tabulate

from uss_bench.registry import TABLES
from uss_bench.results.reproduced import Reproduced, lookup

FORMATS = ("md", "latex", "csv")
CRF_UNKNOWN_MARK = "‡"
UNKNOWN_MARK = "?"
NOT_REPORTED = "–"


class TableError(ValueError):
    """A broken table layout; the message names the file."""


@dataclass(frozen=True)
class Column:
    label: str
    metric: str
    dataset: str


@dataclass(frozen=True)
class Row:
    label: str
    method: str
    backbone: str
    variant: str = ""
    protocol: str = ""
    backbones: dict[str, str] = field(default_factory=dict)  # per-dataset backbone (e.g. PPAP Table 6)

    def backbone_for(self, dataset: str) -> str:
        return self.backbones.get(dataset, self.backbone)


@dataclass(frozen=True)
class TableLayout:
    name: str
    paper: str
    table: str
    caption: str
    source: str
    protocol: str
    crf: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]


def tables_dir() -> Path:
    from uss_bench.paths import PROJECT_ROOT

    return Path(os.environ.get("USS_BENCH_HOME", PROJECT_ROOT)) / "results" / "tables"


def parse_layout(data: dict[str, Any], where: str) -> TableLayout:
    try:
        default_dataset = data.get("dataset")
        columns = tuple(Column(c["label"], c["metric"], c.get("dataset", default_dataset)) for c in data["columns"])
        rows = tuple(Row(r["label"], r["method"], r["backbone"], str(r.get("variant", "")), r.get("protocol", ""),
                         dict(r.get("backbones", {}))) for r in data["rows"])
        crf = str(data["crf"]).lower()
        layout = TableLayout(data["name"], data["paper"], data["table"], data["caption"], data.get("source", ""),
                             data["protocol"], crf, columns, rows)
    except (KeyError, TypeError) as exc:
        raise TableError(f"{where}: malformed table layout ({exc!r}); needs name, paper, table, caption, protocol, "
                         "crf, columns[label, metric, dataset], rows[label, method, backbone]") from exc
    missing = [c.label for c in columns if not c.dataset]
    if missing:
        raise TableError(f"{where}: column(s) {', '.join(missing)} have no dataset (set it per column or table-wide)")
    if crf not in ("true", "false", "unknown"):
        raise TableError(f"{where}: crf must be true, false or unknown, got {data['crf']!r}")
    return layout


def load_layout(path: str | Path) -> TableLayout:
    path = Path(path)
    with open(path) as fh:
        return parse_layout(yaml.safe_load(fh) or {}, str(path))


def register_layouts(directory: Path | None = None) -> None:
    directory = directory or tables_dir()
    for path in sorted(directory.glob("*.yaml")):
        layout = load_layout(path)
        if layout.name not in TABLES._items:  # re-import safe
            TABLES.add(layout.name, layout)


register_layouts()


# ---- building --------------------------------------------------------------------------------------

def _row_runnable(row: Row) -> bool:
    from uss_bench.registry import BACKBONES, METHODS

    backbones = {row.backbone, *row.backbones.values()}
    return row.method in METHODS and all(b in BACKBONES for b in backbones)


def build_cells(layout: TableLayout, reported: pd.DataFrame, reproduced: pd.DataFrame,
                any_protocol: bool = False) -> pd.DataFrame:
    """One tidy row per (table row, column): reported value/state, reproduced mean/std/n, delta, row status."""
    mine = reported[(reported["paper"] == layout.paper) & (reported["table"] == layout.table)]
    cells = []
    for row_index, row in enumerate(layout.rows):
        runnable = _row_runnable(row)
        row_cells = []
        for column in layout.columns:
            backbone = row.backbone_for(column.dataset)
            hits = mine[(mine["method"] == row.method) & (mine["variant"] == row.variant)
                        & (mine["backbone"] == backbone) & (mine["dataset"] == column.dataset)
                        & (mine["metric"] == column.metric)]
            if len(hits) > 1:
                raise TableError(f"{layout.name}: {len(hits)} reported rows for {row.label} / {column.label}")
            protocol = row.protocol or layout.protocol
            crf = layout.crf
            value, state, note = math.nan, "not reported", ""
            if len(hits) == 1:
                hit = hits.iloc[0]
                protocol, crf, note = hit["protocol"], hit["crf"], hit["note"]
                value = float(hit["value"])
                state = "unknown" if math.isnan(value) else "value"
            rep: Reproduced | None = None
            if runnable:
                rep = lookup(reproduced, method=row.method, variant=row.variant, backbone=backbone,
                             dataset=column.dataset, protocol=None if any_protocol else protocol,
                             crf=crf == "true", metric=column.metric)
            delta = rep.mean - value if rep is not None and state == "value" else math.nan
            row_cells.append({
                "row": row_index, "label": row.label, "method": row.method, "variant": row.variant,
                "backbone": backbone, "column": column.label, "dataset": column.dataset, "metric": column.metric,
                "protocol": protocol, "crf": crf, "reported": value, "reported_state": state, "note": note,
                "mean": rep.mean if rep else math.nan, "std": rep.std if rep else math.nan,
                "n": rep.n if rep else 0, "delta": delta, "run_ids": rep.run_ids if rep else "",
            })
        has_runs = any(c["n"] > 0 for c in row_cells)
        status = "reported only" if not runnable else ("" if has_runs else "not run")
        for cell in row_cells:
            cell["row_status"] = status
        cells.extend(row_cells)
    return pd.DataFrame(cells)


# ---- rendering ------------------------------------------------------------------------------------

def _fmt(value: float, signed: bool = False) -> str:
    """One decimal as the papers print, two when the value has them (PPAP Table 6)."""
    text = f"{value:+.2f}" if signed else f"{value:.2f}"
    return text[:-1] if text.endswith("0") else text


def cell_text(cell: pd.Series, pm: str = "±") -> str:
    if cell["reported_state"] == "value":
        text = _fmt(cell["reported"])
    elif cell["reported_state"] == "unknown":
        text = UNKNOWN_MARK
    else:
        text = NOT_REPORTED
    if cell["n"] > 0:
        spread = f" {pm} {_fmt(cell['std'])}" if cell["n"] > 1 else ""
        mark = CRF_UNKNOWN_MARK if cell["crf"] == "unknown" else ""
        text += f" / {_fmt(cell['mean'])}{spread} (n={int(cell['n'])}){mark}"
        if not math.isnan(cell["delta"]):
            text += f" / {_fmt(cell['delta'], signed=True)}"
    return text


def _latex_escape(text: str) -> str:
    for char, repl in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                       ("^", r"\^{}"), ("†", r"$^\dagger$"), ("‡", r"$^\ddagger$"), ("–", "--"),
                       ("±", r"$\pm$"), ("−", "-")):
        text = text.replace(char, repl)
    return text


def wide_frame(layout: TableLayout, cells: pd.DataFrame, latex: bool = False) -> pd.DataFrame:
    rows = []
    for _, group in cells.groupby("row", sort=True):
        first = group.iloc[0]
        esc = _latex_escape if latex else (lambda s: s)
        row = {"Method": esc(first["label"]), "Backbone": esc(first["backbone"])}
        for _, cell in group.iterrows():
            text = cell_text(cell, pm=r"$\pm$" if latex else "±")
            row[esc(cell["column"])] = text.replace("–", "--").replace("‡", r"$^\ddagger$") if latex else text
        row["Status"] = first["row_status"]
        rows.append(row)
    return pd.DataFrame(rows)


def source_citation(layout: TableLayout) -> str:
    """'Seong et al., ECCV 2024, Table 1 (arXiv:2407.12463), Sec. 4.2': papers.yaml's citation + the layout's place."""
    from uss_bench.results.reported import ReportedError, citation

    try:
        text = citation(layout.paper, layout.table)
    except ReportedError:
        text = f"{layout.paper}, Table {layout.table.lstrip('t')}"
    return f"{text}, {layout.source}" if layout.source else text


def footer(layout: TableLayout, cells: pd.DataFrame) -> list[str]:
    lines = [f"{layout.caption} [{source_citation(layout)}]",
             "Cell: reported / reproduced mean ± std (n seeds) / signed delta (reproduced − reported); "
             f"{UNKNOWN_MARK} = reported value unreadable in the source (recorded as unknown); "
             f"{NOT_REPORTED} = not reported by the paper."]
    if (cells["crf"] == "unknown").any() and (cells["n"] > 0).any():
        lines.append(f"{CRF_UNKNOWN_MARK} the paper does not state whether a CRF was used; reproduced without CRF.")
    lines.append("'reported only': uss-bench cannot run this row; 'not run': runnable, no completed records.")
    return lines


def render_table(layout: TableLayout, cells: pd.DataFrame, fmt: str = "md") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "csv":
        return cells.drop(columns=["row"]).to_csv(index=False, float_format="%.4g")
    wide = wide_frame(layout, cells, latex=fmt == "latex")
    if fmt == "md":
        body = tabulate(wide, headers="keys", tablefmt="github", showindex=False, disable_numparse=True)
        return f"**{layout.name}**: {layout.caption}\n\n{body}\n\n" + "\n".join(f"- {line}" for line in
                                                                              footer(layout, cells)) + "\n"
    body = tabulate(wide, headers="keys", tablefmt="latex_raw", showindex=False, disable_numparse=True)
    notes = " ".join(_latex_escape(line) for line in footer(layout, cells)[1:])
    return ("\\begin{table}\n\\centering\n\\caption{" + _latex_escape(layout.caption) + " " + notes + "}\n"
            + body + "\n\\end{table}\n")


def build_table(name: str, results_dir: str | Path, reported_dir: str | Path | None = None,
                any_protocol: bool = False) -> tuple[TableLayout, pd.DataFrame]:
    """Layout + cells of table ``name`` from the reported CSVs and the records under ``results_dir``."""
    from uss_bench.results.export import records_frame
    from uss_bench.results.records import load_records
    from uss_bench.results.reported import load_reported
    from uss_bench.results.reproduced import aggregate

    layout = TABLES.get(name)
    reported = load_reported(reported_dir)
    runs_dir = Path(results_dir) / "runs"
    records = load_records(results_dir) if runs_dir.is_dir() else []
    return layout, build_cells(layout, reported, aggregate(records_frame(records)), any_protocol)
