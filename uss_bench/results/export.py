"""Run records as one tidy table: one row per (run, metric), ready for pandas, CSV or parquet.

Metric names follow the reported-number vocabulary: ``<section>.<key>`` with the ``_crf`` suffix of a
section moved into a boolean ``crf`` column, so ``metrics["cluster_crf"]["miou"]`` becomes
``metric="cluster.miou", crf=True``. Nested dicts (per-class IoU, NF-covering levels) flatten with dots;
non-numeric entries (cluster-to-class mappings, matching rule names) are not metrics and are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

RECORD_COLUMNS = ["run_id", "status", "method", "preset", "dataset", "backbone", "seed", "protocol",
                  "random_init", "overrides", "train_steps", "checkpoint", "created"]
COLUMNS = RECORD_COLUMNS + ["metric", "crf", "value"]
# columns added after the first exports: an older file lacks them and reads them as unknown (NA)
LATER_COLUMNS = ("overrides",)
FORMATS = ("csv", "parquet")


def overrides_key(overrides: dict[str, Any] | None) -> str:
    """A run's ``--set`` overrides as canonical JSON (``{}`` for none): one comparable string."""
    return json.dumps(overrides or {}, sort_keys=True, separators=(",", ":"), default=str)


def _flatten(prefix: str, value: Any) -> Iterator[tuple[str, float]]:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield prefix, float(value)
    elif isinstance(value, dict):
        for key, sub in value.items():
            yield from _flatten(f"{prefix}.{key}", sub)


def record_protocol(record: dict[str, Any]) -> str:
    """The protocol name the run was evaluated under (the recorded protocol wins over the spec)."""
    return str((record.get("protocol") or {}).get("name") or record.get("spec", {}).get("protocol", ""))


def evaluated_checkpoint(record: dict[str, Any]) -> bool:
    """True when the run evaluated released weights instead of training (zero steps or a checkpoint override).

    Decides the tolerance class of ``uss-bench check``: a released checkpoint must reproduce to ±0.5 points.
    """
    spec = record.get("spec", {})
    if (spec.get("overrides") or {}).get("checkpoint"):
        return True
    steps = (record.get("train") or {}).get("steps")
    return steps == 0


def record_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    spec = record.get("spec", {})
    base = {
        "run_id": record.get("run_id"),
        "status": record.get("status"),
        "method": spec.get("method"),
        "preset": spec.get("preset", "default"),
        "dataset": spec.get("dataset"),
        "backbone": spec.get("backbone"),
        "seed": spec.get("seed"),
        "protocol": record_protocol(record),
        "random_init": bool(spec.get("random_init", False)),
        "overrides": overrides_key(spec.get("overrides")),
        "train_steps": (record.get("train") or {}).get("steps"),
        "checkpoint": evaluated_checkpoint(record),
        "created": record.get("created"),
    }
    rows = []
    for section, values in (record.get("metrics") or {}).items():
        crf = section.endswith("_crf")
        name = section[: -len("_crf")] if crf else section
        for metric, value in _flatten(name, values):
            rows.append({**base, "metric": metric, "crf": crf, "value": value})
    if not rows:  # a failed run still appears, without metrics
        rows.append({**base, "metric": None, "crf": None, "value": None})
    return rows


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One tidy row per run x metric (failed runs keep one row with empty metric)."""
    rows = [row for record in records for row in record_rows(record)]
    return pd.DataFrame(rows, columns=COLUMNS)


def export_records(results_dir: str | Path, out_path: str | Path, fmt: str) -> Path:
    """Write every record under ``results_dir`` as one table (``csv`` or ``parquet``), atomically."""
    from uss_bench.results.records import atomic_write_text, load_records

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    frame = records_frame(load_records(results_dir))
    out_path = Path(out_path)
    if fmt == "csv":
        atomic_write_text(out_path, frame.to_csv(index=False))
        return out_path
    try:
        import pyarrow  # noqa: F401  (pandas' parquet engine)
    except ImportError as exc:
        raise RuntimeError("parquet export needs pyarrow: pip install pyarrow") from exc
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(tmp, index=False)
    tmp.replace(out_path)
    return out_path


def read_export(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`export_records` (used as a regression baseline by ``check``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved results file {path}")
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    missing = [c for c in COLUMNS if c not in frame.columns and c not in LATER_COLUMNS]
    if missing:
        raise ValueError(f"{path} is not a uss-bench export: missing column(s) {', '.join(missing)}")
    for column in LATER_COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.NA
    return frame[COLUMNS]
