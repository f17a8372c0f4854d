"""The table printed at the end of ``uss-bench run``: one row per run, paper-style columns."""

from __future__ import annotations

from typing import Any

import pandas as pd
from tabulate import tabulate

COLUMNS = [("cluster", "acc"), ("cluster", "miou"), ("linear", "acc"), ("linear", "miou")]


def records_table(records: list[dict[str, Any]], fmt: str = "github") -> str:
    rows = []
    for rec in records:
        spec = rec.get("spec", {})
        row = {
            "method": spec.get("method"),
            "backbone": spec.get("backbone") + (" (random init)" if spec.get("random_init") else ""),
            "dataset": spec.get("dataset"),
            "seed": spec.get("seed"),
            "protocol": spec.get("protocol"),
            "status": rec.get("status"),
        }
        metrics = rec.get("metrics", {})
        for head, metric in COLUMNS:
            for suffix in ("", "_crf"):
                value = metrics.get(head + suffix, {}).get(metric)
                if suffix and value is None:
                    continue
                row[f"{head}{suffix} {metric}"] = value
        rows.append(row)
    frame = pd.DataFrame(rows)
    return tabulate(frame, headers="keys", tablefmt=fmt, showindex=False, floatfmt=".1f", missingval="-")
