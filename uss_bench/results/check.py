"""Regression check: reproduced numbers against the papers or against a saved earlier results file.

Tolerance classes (points are percentage points):

- ``checkpoint``: the run evaluated released weights (no training), so only evaluation can differ: ±0.5.
- ``retrain``: the run trained the method again: ±2 points, widened to ``sigma`` (2) standard deviations
  over seeds when n >= 2 and the spread is larger.

Overrides per dataset, per metric or per ``dataset:metric`` replace the class's fixed points (the most
specific wins). A value passes when ``|delta| <= tolerance``; anything else makes ``check`` exit 1.
Only like is compared with like: method + preset, backbone, dataset, protocol, CRF on/off and metric.
Against a saved baseline also the runs' ``--set`` overrides and their seeds: a 4-step run is never
compared with a 40-step one, nor a mean over seeds 0,1,2 with seed 0 alone. Runs that agree on
everything but those are listed as unlike, never compared. Against the papers, runs with overrides are
left out (no paper ran them) and counted.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

import pandas as pd

from uss_bench.results.reproduced import GROUP, lookup

EPS = 1e-6  # 57.7 - 57.2 is 0.5000000000000036 in binary floating point
CLASSES = ("checkpoint", "retrain")


class ToleranceError(ValueError):
    pass


@dataclass
class Tolerance:
    checkpoint: float = 0.5
    retrain: float = 2.0
    sigma: float = 2.0
    overrides: dict[str, float] = field(default_factory=dict)

    def points(self, cls: str, dataset: str, metric: str) -> float:
        for key in (f"{dataset}:{metric}", metric, dataset):
            if key in self.overrides:
                return self.overrides[key]
        return self.checkpoint if cls == "checkpoint" else self.retrain

    def limit(self, cls: str, dataset: str, metric: str, std: float, n: int) -> float:
        points = self.points(cls, dataset, metric)
        if cls == "retrain" and n >= 2 and not math.isnan(std):
            return max(points, self.sigma * std)
        return points


def parse_tolerance(items: list[str] | None) -> Tolerance:
    """``checkpoint=0.5``, ``retrain=2``, ``sigma=2``, ``<dataset>=1``, ``<metric>=3``, ``<dataset>:<metric>=1.5``."""
    tol = Tolerance()
    for item in items or []:
        for part in item.split(","):
            if not part.strip():
                continue
            key, sep, value = part.partition("=")
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not sep or not key.strip() or math.isnan(number) or number < 0:
                raise ToleranceError(f"bad --tolerance entry {part!r}: expected KEY=NON_NEGATIVE_NUMBER with KEY one "
                                     "of checkpoint, retrain, sigma, a dataset, a metric or dataset:metric")
            key = key.strip()
            if key in ("checkpoint", "retrain", "sigma"):
                setattr(tol, key, number)
            else:
                tol.overrides[key] = number
    return tol


RESULT_COLUMNS = ["paper", "table", "method", "variant", "backbone", "dataset", "protocol", "crf", "metric",
                  "reference", "mean", "std", "n", "delta", "class", "tolerance", "ok"]


def _tolerance_class(checkpoint: bool, forced: str | None) -> str:
    return forced if forced else ("checkpoint" if checkpoint else "retrain")


UNKNOWN = "unknown"  # overrides of an export written before they were recorded
RUN_KEY = ["method", "preset", "backbone", "random_init", "dataset", "protocol"]  # what a run is, less its settings
LIKE_KEY = GROUP + ["overrides", "seeds"]
UNLIKE_COLUMNS = RUN_KEY + ["current_overrides", "current_seeds", "baseline_overrides", "baseline_seeds", "reason"]


def _bools(series: pd.Series) -> pd.Series:
    return series.map(lambda v: str(v).strip().lower() == "true")


def _seed_text(seeds: pd.Series) -> str:
    values = sorted({int(float(s)) for s in seeds if pd.notna(s)})
    return ",".join(map(str, values))


def aggregate_like(frame: pd.DataFrame) -> pd.DataFrame:
    """Completed runs grouped by everything that makes two numbers like: :data:`GROUP` + overrides, with
    the group's seeds (``"0,1,2"``); mean, std (ddof 1), n, checkpoint, run_ids as in ``reproduced.aggregate``.
    """
    columns = LIKE_KEY + ["mean", "std", "n", "checkpoint", "run_ids"]
    frame = frame[(frame["status"] == "completed") & frame["metric"].notna()].copy()
    if frame.empty:
        return pd.DataFrame(columns=columns)
    if "overrides" not in frame.columns:
        frame["overrides"] = UNKNOWN
    frame["overrides"] = frame["overrides"].fillna(UNKNOWN).astype(str)
    for column in ("random_init", "crf", "checkpoint"):
        frame[column] = _bools(frame[column])
    frame["preset"] = frame["preset"].fillna("default").astype(str)
    grouped = frame.groupby(GROUP + ["overrides"], sort=True)
    out = grouped.agg(mean=("value", "mean"), std=("value", "std"), n=("value", "size"),
                      checkpoint=("checkpoint", "all"), run_ids=("run_id", lambda v: ",".join(map(str, v))),
                      seeds=("seed", _seed_text))
    return out.reset_index()[columns]


def without_overrides(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """(the rows of runs without ``--set`` overrides, how many runs had some): papers ran no overrides."""
    if "overrides" not in frame.columns:
        return frame, 0
    plain = frame["overrides"].fillna("{}").astype(str) == "{}"
    return frame[plain], int(frame.loc[~plain, "run_id"].nunique())


@dataclass
class CheckResult:
    compared: pd.DataFrame
    skipped: dict[str, int]
    unlike: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=UNLIKE_COLUMNS))

    @property
    def failed(self) -> pd.DataFrame:
        return self.compared[~self.compared["ok"].astype(bool)]

    @property
    def exit_code(self) -> int:
        return 1 if len(self.failed) else 0


def against_reported(reported: pd.DataFrame, reproduced: pd.DataFrame, tol: Tolerance,
                     force_class: str | None = None, tables: set[tuple[str, str]] | None = None) -> CheckResult:
    """Every known reported value that has a like-for-like reproduced aggregate.

    ``tables`` limits the check to some (paper, table) pairs, e.g. ``{("ppap2024", "t1")}``.
    """
    skipped = {"unknown reported value": 0, "crf not stated": 0, "protocol not stated": 0, "no reproduced runs": 0}
    rows = []
    for rep in reported.itertuples(index=False):
        if tables is not None and (rep.paper, rep.table) not in tables:
            continue
        if math.isnan(rep.value):
            skipped["unknown reported value"] += 1
            continue
        if rep.crf == "unknown":
            skipped["crf not stated"] += 1
            continue
        if rep.protocol == "unknown":
            skipped["protocol not stated"] += 1
            continue
        hit = lookup(reproduced, method=rep.method, variant=rep.variant, backbone=rep.backbone, dataset=rep.dataset,
                     protocol=rep.protocol, crf=rep.crf == "true", metric=rep.metric)
        if hit is None:
            skipped["no reproduced runs"] += 1
            continue
        cls = _tolerance_class(hit.checkpoint, force_class)
        limit = tol.limit(cls, rep.dataset, rep.metric, hit.std, hit.n)
        delta = hit.mean - rep.value
        rows.append([rep.paper, rep.table, rep.method, rep.variant, rep.backbone, rep.dataset, rep.protocol, rep.crf,
                     rep.metric, rep.value, hit.mean, hit.std, hit.n, delta, cls, limit, abs(delta) <= limit + EPS])
    return CheckResult(pd.DataFrame(rows, columns=RESULT_COLUMNS), skipped)


def _unlike_runs(cur: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """Runs present on both sides that differ only in overrides or seeds (or whose overrides are unknown)."""
    settings = ["overrides", "seeds"]
    left = cur[RUN_KEY + settings].drop_duplicates()
    right = base[RUN_KEY + settings].drop_duplicates()
    pairs = left.merge(right, on=RUN_KEY, suffixes=("_cur", "_base"))
    rows = []
    for r in pairs.itertuples(index=False):
        reasons = []
        if UNKNOWN in (r.overrides_cur, r.overrides_base):
            reasons.append("overrides not recorded (export written before they were; export it again)")
        elif r.overrides_cur != r.overrides_base:
            reasons.append("different --set overrides")
        if r.seeds_cur != r.seeds_base:
            reasons.append("different seeds")
        if reasons:
            rows.append([*(getattr(r, k) for k in RUN_KEY), r.overrides_cur, r.seeds_cur, r.overrides_base,
                         r.seeds_base, "; ".join(reasons)])
    return pd.DataFrame(rows, columns=UNLIKE_COLUMNS)


def against_baseline(current: pd.DataFrame, baseline: pd.DataFrame, tol: Tolerance, force_class: str | None = None,
                     metrics: tuple[str, ...] = ("*.acc", "*.miou")) -> CheckResult:
    """Aggregates (:func:`aggregate_like`) of this results dir against a saved earlier one (harness regression).

    Only aggregates equal in :data:`LIKE_KEY` are compared; runs that differ only in their overrides or
    seeds are returned in ``unlike`` and counted, never compared.
    """
    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        mask = frame["metric"].map(lambda m: any(fnmatch.fnmatchcase(str(m), p) for p in metrics))
        return frame[mask]

    cur, base = keep(current), keep(baseline)
    unlike = _unlike_runs(cur, base)
    merged = cur.merge(base[LIKE_KEY + ["mean"]].rename(columns={"mean": "reference"}), on=LIKE_KEY, how="outer",
                       indicator=True)
    comparable = merged["overrides"] != UNKNOWN
    in_unlike = merged[RUN_KEY].apply(tuple, axis=1).isin(set(unlike[RUN_KEY].apply(tuple, axis=1)))
    skipped = {"only in baseline": int(((merged["_merge"] == "right_only") & ~in_unlike).sum()),
               "only in current": int(((merged["_merge"] == "left_only") & ~in_unlike).sum())}
    if len(unlike):
        skipped["unlike runs (listed)"] = len(unlike)
    rows = []
    for r in merged[(merged["_merge"] == "both") & comparable].itertuples(index=False):
        cls = _tolerance_class(bool(r.checkpoint), force_class)
        limit = tol.limit(cls, r.dataset, r.metric, float(r.std), int(r.n))
        delta = float(r.mean) - float(r.reference)
        variant = "" if r.preset == "default" else r.preset
        backbone = f"{r.backbone} (random init)" if r.random_init else r.backbone
        rows.append(["", "", r.method, variant, backbone, r.dataset, r.protocol, "true" if r.crf else "false",
                     r.metric, float(r.reference), float(r.mean), float(r.std), int(r.n), delta, cls, limit,
                     abs(delta) <= limit + EPS])
    return CheckResult(pd.DataFrame(rows, columns=RESULT_COLUMNS), skipped, unlike)


def format_result(result: CheckResult, reference_label: str) -> str:
    from tabulate import tabulate

    lines = []
    if len(result.compared):
        view = result.compared.copy()
        view["reproduced"] = [f"{m:.2f}" + (f" ± {s:.2f}" if n > 1 else "") + f" (n={n})"
                              for m, s, n in zip(view["mean"], view["std"], view["n"])]
        view["delta"] = view["delta"].map(lambda d: f"{d:+.2f}")
        view["reference"] = view["reference"].map(lambda v: f"{v:.2f}")
        view["tolerance"] = [f"±{t:.2f} ({c})" for t, c in zip(view["tolerance"], view["class"])]
        view["result"] = view["ok"].map(lambda ok: "ok" if ok else "FAIL")
        view = view.rename(columns={"reference": reference_label})
        cols = ["paper", "table", "method", "variant", "backbone", "dataset", "protocol", "crf", "metric",
                reference_label, "reproduced", "delta", "tolerance", "result"]
        if not view["paper"].astype(bool).any():
            cols = cols[2:]
        lines.append(tabulate(view[cols], headers="keys", tablefmt="github", showindex=False, disable_numparse=True))
    n, bad = len(result.compared), len(result.failed)
    skipped = ", ".join(f"{v} {k}" for k, v in result.skipped.items() if v)
    lines.append(f"{n} value(s) compared, {bad} outside tolerance" + (f"; not compared: {skipped}" if skipped else ""))
    for u in result.unlike.itertuples(index=False):
        backbone = f"{u.backbone} (random init)" if u.random_init else u.backbone
        variant = "" if u.preset == "default" else f" [{u.preset}]"
        lines.append(f"not compared, unlike: {u.method}{variant} {backbone} {u.dataset} {u.protocol}: {u.reason} "
                     f"(current: overrides {u.current_overrides}, seeds {u.current_seeds}; "
                     f"baseline: overrides {u.baseline_overrides}, seeds {u.baseline_seeds})")
    if n == 0:
        lines.append("nothing to compare: no completed run matches a reference value like for like "
                     "(method, preset, backbone, dataset, protocol, CRF, metric; against a baseline also "
                     "overrides and seeds)")
    return "\n".join(lines) + "\n"
