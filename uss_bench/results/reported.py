"""Reported numbers: the papers' comparison tables as long-format CSVs in ``results/reported/``.

One value per row, keyed by (paper, table, method, variant, backbone, dataset, protocol, metric).
An empty ``value`` means *unknown*: the cell exists in the paper but could not be read with certainty
from the extracted text; the ``note`` says why. A ``-`` (not reported) in the paper has no row at all.
The vocabulary below is the single place that says which names a reported row may use.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

COLUMNS = ["paper", "table", "method", "variant", "backbone", "dataset", "protocol", "metric", "value", "crf", "note"]
KEY = ["paper", "table", "method", "variant", "backbone", "dataset", "protocol", "metric"]

PAPERS_FILE = "papers.yaml"
PAPER_FIELDS = ("authors", "title", "venue", "year")


def load_papers(directory: str | Path | None = None) -> dict[str, dict]:
    """``papers.yaml`` beside the CSVs: the one place a paper's authors, title, venue, year and arXiv id live.

    A directory of extra CSVs without its own ``papers.yaml`` uses the shipped one.
    """
    import yaml

    path = (Path(directory) if directory is not None else reported_dir()) / PAPERS_FILE
    if not path.is_file():
        path = reported_dir() / PAPERS_FILE
    if not path.is_file():
        raise ReportedError(f"missing {path}: the citation of every paper key used in the reported CSVs")
    with open(path) as fh:
        papers = yaml.safe_load(fh) or {}
    for key, entry in papers.items():
        missing = [f for f in PAPER_FIELDS if not (entry or {}).get(f)]
        if missing:
            raise ReportedError(f"{path}: paper {key!r} lacks {', '.join(missing)}")
    return papers


def citation(paper: str, table: str | None = None, papers: dict[str, dict] | None = None) -> str:
    """'Seong et al., ECCV 2024, Table 1 (arXiv:2407.12463)'; ``table`` is 't1' or None."""
    papers = papers if papers is not None else load_papers()
    if paper not in papers:
        raise ReportedError(f"paper {paper!r} has no entry in {PAPER_FILE_HINT}")
    entry = papers[paper]
    authors = entry["authors"]
    who = authors[0].split()[-1] + (" et al." if len(authors) > 2 else f" and {authors[1].split()[-1]}"
                                    if len(authors) == 2 else "")
    text = f"{who}, {entry['venue']} {entry['year']}"
    if table:
        text += f", Table {table.lstrip('t')}"
    if entry.get("arxiv"):
        text += f" (arXiv:{entry['arxiv']})"
    return text


PAPER_FILE_HINT = "results/reported/papers.yaml"

# Methods uss-bench implements (records.md contract); the live registry may hold fewer while they land.
HARNESS_METHODS = ("iic", "picie", "stego", "hp", "ppap", "hsg", "san", "dino")

# Methods that appear only as reported rows. Token -> how the papers print it.
REPORTED_ONLY_METHODS = {
    "ac": "AC, Autoregressive unsupervised image segmentation (Ouali et al. 2020)",
    "context-prediction": "CP / Doersch 2015, context prediction",
    "deepcluster": "DC / DeepCluster / DeepClu. (Caron et al. 2018)",
    "densecl": "DenseCL (Wang et al.)",
    "fs4": "FS^4",
    "infoseg": "InfoSeg (Harb & Knobelreiter 2021)",
    "inmars": "InMARS (Mirsadeghi et al. 2021)",
    "isola": "CC / Isola 2016, visual groups from co-occurrences",
    "kmeans": "K-Means",
    "maskcontrast": "MaskContrast (Van Gansbeke et al. 2021)",
    "mdc": "MDC, modified DeepCluster",
    "moco": "MoCo (He et al. 2020)",
    "mocov2": "MoCoV2",
    "pass": "PASS (Gao et al., large-scale USS / ImageNet-S)",
    "rand-cnn": "Rand. CNN",
    "revisit": "Revisit: revisiting contrastive methods (Van Gansbeke et al.)",
    "segsort": "SegSort (Hwang et al. 2019)",
    "sift": "SIFT",
    "swav": "SwAV (Caron et al. 2020)",
    "transfgu": "TransFGU (Yin et al. 2022)",
}

# Backbone tokens of reported rows that are not (yet) harness backbones.
REPORTED_BACKBONES = {
    "resnet18-fpn": "R18+FPN (PiCIE-style ResNet-18 + FPN)",
    "resnet18": "ResNet-18 (ImageNet pre-trained)",
    "resnet50": "ResNet-50",
    "vgg11": "VGG11 (IIC-style)",
    "pspnet-resnet50": "PSPNet-ResNet50, supervised ImageNet pre-training (HSG Table 5)",
    "san-vit": "SAN's randomly initialised six-layer ViT",
    "unknown": "the paper's table does not state the backbone",
}
HARNESS_BACKBONES = ("vit-s8", "vit-s16", "vit-b8", "vit-b16", "fcn-resnet50")

HARNESS_DATASETS = ("cocostuff27", "cocostuff15", "cocostuff3", "cityscapes27", "cityscapes19", "potsdam", "potsdam3",
                    "imagenet-s50", "imagenet-s300", "imagenet-s919", "voc12", "kitti-step", "synthetic")
PROTOCOLS = ("uss", "stego", "hp", "ppap", "picie", "iic", "hsg-knn", "imagenet-s", "unknown")
CRF_VALUES = ("true", "false", "unknown")

# Metric names are "<record section>.<key>": the path of the value inside a run record's "metrics"
# (the CRF flag picks the "<section>_crf" section). Per-class IoU: "<section>.iou.<class>".
METRICS = {
    "cluster.acc": "pixel accuracy after matching clusters to classes (unsupervised)",
    "cluster.miou": "mIoU after matching clusters to classes (unsupervised)",
    "linear.acc": "linear-probe pixel accuracy",
    "linear.miou": "linear-probe mIoU",
    "knn.acc": "pixel accuracy of k-NN segment retrieval (HSG / SegSort)",
    "knn.miou": "mIoU of k-NN segment retrieval (HSG / SegSort)",
    "imagenet_s_distance.miou": "ImageNet-S mIoU (PASS distance matching, K+1 classes)",
    "nfcovering": "HSG Normalized Foreground Covering",
    "positives.tp_pct": "PPAP Table 6: % of true positives in the positive set",
    "negatives.fp_pct": "PPAP Table 6: % of false positives in the negative set",
}
PER_CLASS_METRIC = re.compile(r"^(cluster|linear|knn)\.iou\.[a-z0-9_-]+$")


class ReportedError(ValueError):
    """A reported CSV that breaks the schema; the message names the file and row."""


def reported_dir() -> Path:
    """``results/reported`` beside the package (``USS_BENCH_HOME`` overrides the root)."""
    from uss_bench.paths import PROJECT_ROOT

    return Path(os.environ.get("USS_BENCH_HOME", PROJECT_ROOT)) / "results" / "reported"


def known_methods() -> set[str]:
    from uss_bench.registry import METHODS

    return set(METHODS.names()) | set(HARNESS_METHODS) | set(REPORTED_ONLY_METHODS)


def known_backbones() -> set[str]:
    from uss_bench.registry import BACKBONES

    return set(BACKBONES.names()) | set(HARNESS_BACKBONES) | set(REPORTED_BACKBONES)


def known_datasets() -> set[str]:
    from uss_bench.registry import DATASETS

    return set(DATASETS.names()) | set(HARNESS_DATASETS)


def is_known_metric(metric: str) -> bool:
    return metric in METRICS or bool(PER_CLASS_METRIC.match(metric))


def read_reported_csv(path: str | Path) -> pd.DataFrame:
    """Read one CSV as strings (``value`` as float, NaN = unknown); a missing column is an error naming the file."""
    path = Path(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ReportedError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    frame = frame[COLUMNS].copy()
    frame["source"] = [f"{path.name}:{i + 2}" for i in range(len(frame))]  # line number in the file
    bad = [s for s, v in zip(frame["source"], frame["value"]) if v.strip() and not _is_float(v)]
    if bad:
        raise ReportedError(f"non-numeric value at {', '.join(bad)}")
    frame["value"] = pd.to_numeric(frame["value"].str.strip().replace("", None), errors="coerce").astype(float)
    return frame


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_reported(directory: str | Path | None = None, validate: bool = True) -> pd.DataFrame:
    """All ``*.csv`` under ``directory`` as one frame; validated against the vocabulary by default."""
    directory = Path(directory) if directory is not None else reported_dir()
    paths = sorted(directory.glob("*.csv"))
    if not paths:
        raise ReportedError(f"no reported CSVs in {directory}")
    frame = pd.concat([read_reported_csv(p) for p in paths], ignore_index=True)
    if validate:
        problems = validate_reported(frame, load_papers(directory))
        if problems:
            raise ReportedError("invalid reported rows:\n  " + "\n  ".join(problems))
    return frame


def validate_reported(frame: pd.DataFrame, papers: dict[str, dict] | None = None) -> list[str]:
    """Every schema problem, one line each naming ``file:line``."""
    problems: list[str] = []
    papers = papers if papers is not None else load_papers()
    methods, backbones, datasets = known_methods(), known_backbones(), known_datasets()
    for row in frame.itertuples(index=False):
        where = row.source
        checks = [
            (row.paper in papers, f"unknown paper {row.paper!r} (not in {PAPER_FILE_HINT})"),
            (bool(re.fullmatch(r"t\d+", row.table)), f"table {row.table!r} is not t<N>"),
            (row.method in methods, f"unknown method {row.method!r}"),
            (row.backbone in backbones, f"unknown backbone {row.backbone!r}"),
            (row.dataset in datasets, f"unknown dataset {row.dataset!r}"),
            (row.protocol in PROTOCOLS, f"unknown protocol {row.protocol!r}"),
            (is_known_metric(row.metric), f"unknown metric {row.metric!r}"),
            (row.crf in CRF_VALUES, f"crf must be one of {'/'.join(CRF_VALUES)}, got {row.crf!r}"),
            (pd.isna(row.value) or 0.0 <= row.value <= 100.0, f"value {row.value} outside [0, 100]"),
            (pd.notna(row.value) or bool(row.note.strip()), "unknown (empty) value without a note saying why"),
            (bool(row.note.strip()), "empty provenance note"),
        ]
        problems.extend(f"{where}: {message}" for ok, message in checks if not ok)
    dup = frame[frame.duplicated(KEY, keep=False)]
    for _, group in dup.groupby(KEY, sort=False):
        problems.append(f"duplicate key {'/'.join(group.iloc[0][KEY])} at {', '.join(group['source'])}")
    return problems


def unknown_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows recorded as unknown (empty value), with their notes."""
    return frame[frame["value"].isna()][KEY + ["note", "source"]]
