"""Reproduced numbers: completed runs aggregated over seeds (mean, std, n) per comparable key.

Two numbers are "like" only when method (+ preset), backbone, dataset, protocol, CRF on/off and metric
all agree; that key is the single place both ``uss-bench table`` and ``uss-bench check`` use.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

GROUP = ["method", "preset", "backbone", "random_init", "dataset", "protocol", "crf", "metric"]


def _as_bool(series: pd.Series) -> pd.Series:
    return series.map(lambda v: str(v).strip().lower() == "true")


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Completed runs grouped by :data:`GROUP`: mean, std (ddof 1), n, checkpoint, run_ids.

    Random-init runs (smoke sweeps) form their own groups: a saved baseline can hold them, a paper never does.
    """
    columns = GROUP + ["mean", "std", "n", "checkpoint", "run_ids"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame[(frame["status"] == "completed") & frame["metric"].notna()].copy()
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame["random_init"] = _as_bool(frame["random_init"])
    frame["crf"] = _as_bool(frame["crf"])
    frame["checkpoint"] = _as_bool(frame["checkpoint"])
    frame["preset"] = frame["preset"].fillna("default").astype(str)
    grouped = frame.groupby(GROUP, sort=True)
    out = grouped.agg(mean=("value", "mean"), std=("value", "std"), n=("value", "size"),
                      checkpoint=("checkpoint", "all"), run_ids=("run_id", lambda s: ",".join(map(str, s))))
    return out.reset_index()[columns]


def preset_of(variant: str) -> str:
    """A reported row's variant names the harness preset that reproduces it ('' = the default preset)."""
    return variant if variant else "default"


@dataclass(frozen=True)
class Reproduced:
    mean: float
    std: float  # NaN when n == 1
    n: int
    checkpoint: bool
    run_ids: str


def lookup(agg: pd.DataFrame, *, method: str, variant: str, backbone: str, dataset: str, protocol: str | None,
           crf: bool, metric: str) -> Reproduced | None:
    """The pretrained-init aggregate for one reported key (papers never report random-init backbones).

    ``protocol=None`` accepts any protocol, but only if exactly one matches.
    """
    if agg.empty:
        return None
    mask = ((agg["method"] == method) & (agg["preset"] == preset_of(variant)) & (agg["backbone"] == backbone)
            & ~agg["random_init"].astype(bool) & (agg["dataset"] == dataset) & (agg["crf"] == crf)
            & (agg["metric"] == metric))
    if protocol is not None:
        mask &= agg["protocol"] == protocol
    hits = agg[mask]
    if len(hits) != 1:
        return None
    hit = hits.iloc[0]
    return Reproduced(float(hit["mean"]), float(hit["std"]), int(hit["n"]), bool(hit["checkpoint"]),
                      str(hit["run_ids"]))
