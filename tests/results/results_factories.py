"""Hand-made run records and reported rows for the results tests (imported by the test modules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from uss_bench.results.records import write_record
from uss_bench.results.reported import COLUMNS


def make_record(run_id: str, method: str = "hp", dataset: str = "cocostuff27", backbone: str = "vit-s8",
                seed: int = 0, protocol: str = "ppap", metrics: dict[str, Any] | None = None, steps: int = 100,
                status: str = "completed", preset: str = "default", random_init: bool = False) -> dict[str, Any]:
    return {
        "run_id": run_id, "status": status,
        "spec": {"method": method, "dataset": dataset, "backbone": backbone, "seed": seed, "protocol": protocol,
                 "preset": preset, "random_init": random_init, "overrides": {}},
        "metrics": metrics if metrics is not None else {},
        "protocol": {"name": protocol, "crf": True},
        "train": {"steps": steps, "selected_step": steps},
        "created": f"2026-11-23T08:00:{seed:02d}+00:00",
    }


def write_records(results_dir: Path, records: list[dict[str, Any]]) -> Path:
    for record in records:
        write_record(results_dir, record)
    return results_dir


def reported_row(**fields: Any) -> dict[str, Any]:
    row = {"paper": "ppap2024", "table": "t1", "method": "hp", "variant": "", "backbone": "vit-s8",
           "dataset": "cocostuff27", "protocol": "ppap", "metric": "cluster.acc", "value": 50.0, "crf": "true",
           "note": "hand-made test row"}
    row.update(fields)
    return row


def reported_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["value"] = frame["value"].astype(float)
    frame["source"] = [f"test.csv:{i + 2}" for i in range(len(frame))]
    return frame


def write_reported_csv(directory: Path, rows: list[dict[str, Any]], name: str = "test.csv") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["value"] = ["" if pd.isna(v) else v for v in frame["value"]]
    frame.to_csv(directory / name, index=False)
    return directory
