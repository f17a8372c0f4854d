"""The transcribed paper numbers: schema, vocabulary, spot checks against the papers, layout coverage."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from results_factories import reported_frame, reported_row, write_reported_csv

from uss_bench.registry import TABLES
from uss_bench.results.reported import (
    KEY,
    ReportedError,
    citation,
    load_papers,
    load_reported,
    reported_dir,
    unknown_cells,
    validate_reported,
)


@pytest.fixture(scope="module")
def reported():
    return load_reported()


def test_shipped_csvs_pass_the_schema(reported):
    assert validate_reported(reported) == []
    assert set(reported["paper"]) == {"ppap2024", "hsg2022", "san2023"}
    assert not reported.duplicated(KEY).any()


def value(reported, **key):
    mask = True
    for column, wanted in key.items():
        mask = mask & (reported[column] == wanted)
    hits = reported[mask]
    assert len(hits) == 1, key
    return hits.iloc[0]["value"]


@pytest.mark.parametrize("key, expected", [
    # PPAP Table 1, ViT-S/8 PPAP row: 59.0 / 27.2 / 76.9 / 46.3
    (dict(paper="ppap2024", table="t1", method="ppap", backbone="vit-s8", metric="linear.miou"), 46.3),
    (dict(paper="ppap2024", table="t1", method="stego", backbone="vit-s16", metric="cluster.acc"), 52.5),
    # PPAP Table 2, ViT-B/8 HP row: 79.5 / 18.4 / 90.9 / 33.0
    (dict(paper="ppap2024", table="t2", method="hp", backbone="vit-b8", metric="linear.acc"), 90.9),
    (dict(paper="ppap2024", table="t3", method="iic", backbone="vgg11", metric="cluster.acc"), 65.1),
    (dict(paper="ppap2024", table="t4", method="ppap", dataset="imagenet-s50"), 59.3),
    (dict(paper="ppap2024", table="t5", variant="ans", metric="cluster.miou"), 25.1),
    (dict(paper="ppap2024", table="t6", method="hp", dataset="cityscapes27", metric="negatives.fp_pct"), 21.33),
    (dict(paper="hsg2022", table="t1", method="segsort", dataset="kitti-step", metric="knn.acc"), 69.8),
    (dict(paper="hsg2022", table="t2", method="hsg", dataset="potsdam", metric="knn.miou"), 43.8),
    (dict(paper="hsg2022", table="t5", method="hsg", metric="knn.iou.diningtable"), 51.2),
    (dict(paper="san2023", table="t2", method="infoseg", dataset="potsdam"), 57.3),
    (dict(paper="san2023", table="t3", method="san", dataset="cityscapes27"), 51.0),
])
def test_spot_values_match_the_papers(reported, key, expected):
    assert value(reported, **key) == pytest.approx(expected)


def test_garbled_cells_are_unknown_with_a_reason(reported):
    unknown = unknown_cells(reported)
    assert len(unknown) == 26  # 30 garbled cells, 4 recovered from a second source (next test)
    assert unknown["note"].str.contains("UNKNOWN:").all()
    # PPAP Table 2's ViT-S/8 block: STEGO, HP and PPAP rows are all unreadable
    block = unknown[(unknown["table"] == "t2") & (unknown["backbone"] == "vit-s8")]
    assert sorted(set(block["method"])) == ["hp", "ppap", "stego"] and len(block) == 12
    assert math.isnan(value(reported, paper="ppap2024", table="t1", method="iic", backbone="resnet18-fpn",
                            metric="linear.acc"))


@pytest.mark.parametrize("method, variant, expected", [("mdc", "", 9.8), ("iic", "", 6.7), ("picie", "", 13.8),
                                                      ("picie", "h", 14.4)])
def test_recovered_cells_name_their_second_source(reported, method, variant, expected):
    """PPAP Table 1's R18+FPN unsupervised mIoU, garbled as '9.86.713.814.4', settled by DiffCut's Table 1."""
    hit = reported[(reported["table"] == "t1") & (reported["method"] == method) & (reported["variant"] == variant)
                   & (reported["backbone"] == "resnet18-fpn") & (reported["metric"] == "cluster.miou")].iloc[0]
    assert hit["value"] == pytest.approx(expected)
    assert "RECOVERED" in hit["note"] and "Couairon et al., NeurIPS 2024 (DiffCut), Table 1" in hit["note"]
    assert "'9.86.713.814.4'" in hit["note"]


def test_every_reported_row_is_a_cell_of_its_table_layout(reported):
    """Catches a layout that forgets a row/column, or a CSV row the tables never show."""
    cells = set()
    for name in TABLES.names():
        layout = TABLES.get(name)
        for row in layout.rows:
            for col in layout.columns:
                cells.add((layout.paper, layout.table, row.method, row.variant, row.backbone_for(col.dataset),
                           col.dataset, col.metric))
    keys = set(map(tuple, reported[["paper", "table", "method", "variant", "backbone", "dataset", "metric"]].values))
    assert keys - cells == set()
    assert {"ppap-t1", "ppap-t2", "ppap-t3", "ppap-t4", "ppap-t5", "ppap-t6", "hsg-t1", "hsg-t2", "hsg-t5",
            "san-t2", "san-t3"} <= set(TABLES.names())


@pytest.mark.parametrize("fields, message", [
    (dict(method="not-a-method"), "unknown method 'not-a-method'"),
    (dict(dataset="coco"), "unknown dataset 'coco'"),
    (dict(metric="cluster.f1"), "unknown metric 'cluster.f1'"),
    (dict(value=100.5), "outside [0, 100]"),
    (dict(value=-0.1), "outside [0, 100]"),
    (dict(crf="yes"), "crf must be one of"),
    (dict(value=float("nan"), note=""), "unknown (empty) value without a note"),
    (dict(protocol="made-up"), "unknown protocol"),
])
def test_schema_rejects_bad_rows(fields, message):
    problems = validate_reported(reported_frame([reported_row(**fields)]))
    assert any(message in p for p in problems), problems
    assert all(p.startswith("test.csv:2:") for p in problems)


def test_schema_accepts_boundaries_and_rejects_duplicates():
    ok = reported_frame([reported_row(value=0.0), reported_row(metric="cluster.miou", value=100.0)])
    assert validate_reported(ok) == []
    dup = reported_frame([reported_row(), reported_row(value=51.0)])
    assert any("duplicate key" in p and "test.csv:2, test.csv:3" in p for p in validate_reported(dup))


def test_load_reported_names_the_file_and_line(tmp_path):
    write_reported_csv(tmp_path, [reported_row(), reported_row(metric="cluster.miou", value="12,5")], "bad.csv")
    with pytest.raises(ReportedError, match=r"bad.csv:3"):
        load_reported(tmp_path)
    with pytest.raises(ReportedError, match="no reported CSVs"):
        load_reported(tmp_path / "empty")


PAPERS_DIR = Path(os.environ.get("USS_BENCH_PAPER_TEXTS", Path(__file__).resolve().parents[2].parent / "shared"
                                  / "papers"))
# Extracted texts of the papers transcribed from a workspace copy (the notes cite the papers, not these files).
PAPER_TEXTS = {"ppap2024": "ppap_eccv2024.txt", "hsg2022": "hsg_cvpr2022.txt", "san2023": "san_aaai2023.txt"}


def raw_reported() -> pd.DataFrame:
    return pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in sorted(reported_dir().glob("*.csv"))])


def occurs(value: str, text: str) -> bool:
    return bool(re.search(r"(?<![\d.])" + re.escape(value) + r"(?!\d)", text))


@pytest.mark.skipif(not PAPERS_DIR.is_dir(), reason="../shared/papers (the extracted paper texts) not present")
def test_every_known_value_occurs_in_its_source_text():
    """Each transcribed number must appear verbatim in the paper's extracted text (catches typos)."""
    raw = raw_reported()
    missing = []
    for row in raw[(raw["value"] != "") & raw["paper"].isin(list(PAPER_TEXTS))].itertuples(index=False):
        text = (PAPERS_DIR / PAPER_TEXTS[row.paper]).read_text()
        # a recovered cell is garbled in the text: its digits are there, run together with its neighbours'
        found = row.value in text if "RECOVERED" in row.note else occurs(row.value, text)
        if not found:
            missing.append(f"{row.paper}/{row.table}/{row.method}/{row.metric}={row.value}")
    assert missing == []


READ_LINE = re.compile(r"read: '([^']*)'")


def test_values_from_public_copies_occur_in_the_line_quoted_in_their_note():
    """Papers without a workspace text (STEGO, HP) and values recovered from a second source quote the table line
    read in the public copy (``read: '...'``); the value must occur in that quoted line."""
    raw = raw_reported()
    quoted = raw[(raw["value"] != "") & (~raw["paper"].isin(list(PAPER_TEXTS)) | raw["note"].str.contains("read: '"))]
    bad = []
    for row in quoted.itertuples(index=False):
        lines = READ_LINE.findall(row.note)
        if not lines or not any(occurs(row.value, line) for line in lines):
            bad.append(f"{row.paper}/{row.table}/{row.method}/{row.backbone}/{row.metric}={row.value}")
    assert bad == []


WORKSPACE_PATH = re.compile(r"shared/|papers/|[\w-]+\.txt\b|/work/")


def test_no_reported_number_cites_a_workspace_path():
    """Notes and table footnotes cite papers (papers.yaml), never files of our workspace that no clone has."""
    raw = raw_reported()
    assert [n for n in raw["note"] if WORKSPACE_PATH.search(n)] == []
    sources = [TABLES.get(name).source for name in TABLES.names()]
    assert [s for s in sources if WORKSPACE_PATH.search(s)] == []
    papers = load_papers()
    for row in raw.drop_duplicates(["paper", "table"]).itertuples(index=False):
        assert row.note.startswith(citation(row.paper, row.table, papers)), (row.paper, row.table, row.note[:80])


def test_citation_format():
    papers = load_papers()
    assert citation("ppap2024", "t1", papers) == "Seong et al., ECCV 2024, Table 1 (arXiv:2407.12463)"
    assert citation("hsg2022", None, papers) == "Ke et al., CVPR 2022 (arXiv:2204.11432)"
    assert set(papers) >= {"ppap2024", "hsg2022", "san2023"}
    with pytest.raises(ReportedError, match="no entry"):
        citation("nope2020", "t1", papers)
