"""The offline report site: structure checked with an HTML parser, verdict colours from the check, run pages."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from results_factories import make_record, write_records

from uss_bench.cli import main
from uss_bench.results.figures import prediction_path
from uss_bench.results.report import build_report


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, attrs, parent, [], ""

    def iter(self, tag: str | None = None):
        for child in self.children:
            if tag is None or child.tag == tag:
                yield child
            yield from child.iter(tag)

    def all_text(self) -> str:
        return (self.text + " ".join(c.all_text() for c in self.children)).strip()

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


VOID = {"meta", "link", "img", "br", "hr", "input"}


class TreeBuilder(HTMLParser):
    """A small DOM from html.parser; also records tags closed without being opened (malformed markup)."""

    def __init__(self):
        super().__init__()
        self.root = Node("#root", {}, None)
        self.current = self.root
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if self.current.tag != tag:
            self.errors.append(f"</{tag}> closes <{self.current.tag}>")
            return
        self.current = self.current.parent

    def handle_data(self, data):
        self.current.text += data


def parse(path: Path) -> Node:
    builder = TreeBuilder()
    builder.feed(path.read_text(encoding="utf-8"))
    builder.close()
    assert builder.errors == [], builder.errors
    assert builder.current is builder.root, f"unclosed <{builder.current.tag}>"
    return builder.root


def by_id(root: Node, ident: str) -> Node:
    hits = [n for n in root.iter() if n.attrs.get("id") == ident]
    assert len(hits) == 1, ident
    return hits[0]


def hp_t1_records() -> list[dict]:
    """HP ViT-S/8 on COCO-Stuff-27 under PPAP's protocol with CRF: PPAP Table 1 reports 57.2 Acc / 24.6 mIoU
    (unsupervised). Acc 57.0 ± 1.0 passes (|-0.2| <= 2), mIoU 20.0 fails (|-4.6| > 2)."""
    recs = []
    for seed, (acc, miou) in enumerate([(56.0, 20.0), (57.0, 21.0), (58.0, 19.0)]):
        recs.append(make_record(f"hp{seed}", seed=seed, metrics={
            "cluster": {"acc": acc - 1, "miou": miou - 1},
            "cluster_crf": {"acc": acc, "miou": miou, "iou": {"sky": 80.0, "wall": 10.0, "water": 45.5}},
        }))
    recs[0]["environment"] = {"torch": "2.3.0", "device": "cpu", "git": "abc123"}
    return recs


@pytest.fixture()
def site(tmp_path):
    results = write_records(tmp_path / "res", hp_t1_records())
    pred = np.zeros((8, 8), dtype=np.uint8)
    pred[:, 4:] = 255
    path = prediction_path(results, "hp0", "000000006723")
    path.parent.mkdir(parents=True)
    Image.fromarray(pred).save(path)
    index = build_report(results, tmp_path / "site", tables=["ppap-t1", "hsg-t1"], data_root=None)
    return index


def test_index_lists_tables_with_counts(site):
    root = parse(site)
    rows = list(by_id(root, "table-index").iter("tbody"))[0].children
    assert [r.attrs["id"] for r in rows] == ["t-ppap-t1", "t-hsg-t1"]  # the order asked for
    ppap = by_id(root, "t-ppap-t1")
    cells = [c for c in ppap.children if c.tag == "td"]
    link = list(cells[0].iter("a"))[0]
    assert link.attrs["href"] == "tables/ppap-t1.html" and (site.parent / link.attrs["href"]).is_file()
    assert "Seong et al., ECCV 2024, Table 1 (arXiv:2407.12463)" in cells[2].all_text()
    counts = {next(iter(c.classes - {"num"})): int(c.all_text()) for c in cells[3:]}
    # HP vit-s8 row: 4 cells reproduced (two compared with CRF), acc ok, mIoU out; linear has no run -> not compared
    assert counts["count-reproduced"] == 2
    assert counts["count-within-tolerance"] == 1 and counts["count-out-of-tolerance"] == 1
    # runnable rows (registry methods on harness backbones) with a reported value and no run
    assert counts["count-not-run"] > 0


def test_table_page_cells_carry_verdict_delta_and_run_links(site):
    root = parse(site.parent / "tables" / "ppap-t1.html")
    table = by_id(root, "paper-table")
    hp_row = [tr for tr in table.iter("tr") if [th.all_text() for th in tr.children if th.tag == "th"] == ["HP"]][0]
    cells = [td for td in hp_row.children if td.tag == "td"]
    assert cells[0].all_text() == "vit-s8"
    acc, miou = cells[1], cells[2]
    assert "ok" in acc.classes and acc.attrs["data-verdict"] == "ok"
    assert "fail" in miou.classes
    spans = {next(iter(s.classes)): s.all_text() for s in acc.iter("span")}
    assert spans["reported"] == "57.2" and spans["reproduced"] == "57.0 ± 1.0 (n=3)" and spans["delta"] == "-0.2"
    assert {s.all_text() for s in miou.iter("span") if "delta" in s.classes} == {"-4.6"}
    hrefs = [a.attrs["href"] for a in acc.iter("a")]
    assert hrefs == ["../runs/hp0.html", "../runs/hp1.html", "../runs/hp2.html"]
    assert all((site.parent / "tables" / h).resolve().is_file() for h in hrefs)
    assert "Seong et al." in acc.attrs["title"]  # the provenance note of the reported value
    assert cells[-1].all_text() == "reproduced"


def test_run_page_has_protocol_environment_sorted_iou_and_predictions(site):
    root = parse(site.parent / "runs" / "hp0.html")
    protocol = {tr.children[0].all_text(): tr.children[1].all_text() for tr in by_id(root, "protocol").iter("tr")}
    assert protocol == {"name": "ppap", "crf": "True"}
    env = {tr.children[0].all_text(): tr.children[1].all_text() for tr in by_id(root, "environment").iter("tr")}
    assert env["torch"] == "2.3.0" and env["git"] == "abc123"
    bars = [svg for svg in root.iter("svg") if "bars" in svg.classes]
    assert len(bars) == 1
    names = [g.children[0].all_text() for g in bars[0].iter("g")]
    assert names == ["sky", "water", "wall"]  # highest IoU first
    widths = [float(g.children[1].attrs["width"]) for g in bars[0].iter("g")]
    assert widths == sorted(widths, reverse=True) and widths[0] == pytest.approx(80.0 * 3.8)
    img = [i for i in root.iter("img")][0]
    png = site.parent / "runs" / img.attrs["src"]
    with Image.open(png) as im:
        rgb = np.asarray(im.convert("RGB"))
    # class 0 of COCO-Stuff-27 in the generic map is (128, 0, 0); 255 (unmatched) is black
    assert rgb[0, 0].tolist() == [128, 0, 0] and rgb[0, 7].tolist() == [0, 0, 0]


def test_site_is_self_contained(site):
    """Every href/src is relative and resolves inside the site; no script, no external stylesheet."""
    pages = sorted(site.parent.rglob("*.html"))
    assert len(pages) == 1 + 2 + 3  # index, two tables, three runs
    for page in pages:
        root = parse(page)
        assert list(root.iter("script")) == []
        for node in root.iter():
            for attr in ("href", "src"):
                target = node.attrs.get(attr)
                if target is None:
                    continue
                assert "://" not in target and not target.startswith("/"), (page, target)
                assert (page.parent / target.split("#")[0]).resolve().is_file(), (page, target)


def test_report_command_and_bad_input(tmp_path, capsys):
    results = write_records(tmp_path / "res", hp_t1_records())
    out = tmp_path / "site"
    assert main(["report", "--results", str(results), "--out", str(out), "--tables", "ppap-t1", "--no-figures"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {out / 'index.html'}"
    assert main(["report", "--results", str(tmp_path / "nope"), "--out", str(tmp_path / "s2")]) == 2
    assert "no results directory" in capsys.readouterr().err and not (tmp_path / "s2").exists()
    assert main(["report", "--results", str(results), "--out", str(tmp_path / "s3"), "--tables", "ppap-t99"]) == 2
    assert not (tmp_path / "s3").exists()


@pytest.mark.slow
def test_run_prints_the_refreshed_report(tmp_path, capsys):
    """A real (synthetic, smoke) run ends by rebuilding <results>/report and printing where it is."""
    results = tmp_path / "results"
    args = ["run", "--methods", "dino", "--datasets", "synthetic", "--preset", "smoke", "--executor", "inline",
            "--results", str(results), "--data-root", str(tmp_path / "data")]
    assert main(args) == 0
    out = capsys.readouterr().out
    index = results / "report" / "index.html"
    assert f"report: {index}" in out.splitlines()
    root = parse(index)
    (run_link,) = [a for a in by_id(root, "run-index").iter("a")]
    run_page = index.parent / run_link.attrs["href"]
    page = parse(run_page)
    # the synthetic card's four figure ids were saved and shown in the dataset's colours
    assert len([i for i in page.iter("img")]) == 4
    names = [g.children[0].all_text() for svg in page.iter("svg") for g in svg.iter("g")]
    assert set(names) >= {"smooth-blue", "checkered-grey"}
    # the qualitative grid of the synthetic dataset (data root given by the run) is among the figures
    assert any(i.attrs["src"] == "figures/synthetic-smoke-grid.png" for i in root.iter("img"))


def test_templates_are_declared_package_data():
    """An installed (non-editable) uss-bench must carry every template: pyproject's package-data globs cover them."""
    import fnmatch

    import uss_bench.results

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "uss_bench.results"]
    package = Path(uss_bench.results.__file__).parent
    files = [p.relative_to(package).as_posix() for p in (package / "report_templates").iterdir() if p.is_file()]
    assert {"base.html", "index.html", "table.html", "run.html", "style.css"} <= {Path(f).name for f in files}
    assert [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)] == []
