"""The report site rendered by a real headless browser (Debian's ``chromium``), as a user opens it from disk.

Skipped when chromium is not installed, unless ``USS_BENCH_REQUIRE_BROWSER=1`` (set by ``.ci/run``): in CI a missing
browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from results_factories import write_records
from test_report import by_id, hp_t1_records, parse

from uss_bench.results.report import build_report

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("USS_BENCH_REQUIRE_BROWSER") == "1"

if BROWSER is None and REQUIRED:
    pytest.fail("USS_BENCH_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install -y chromium)",
                pytrace=False)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="chromium not installed (apt-get install -y chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--window-size=1280,900"]


def chromium(page: Path, tmp: Path, *action: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={profile}", *action, page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)


def console_messages(stderr: str) -> list[str]:
    """Chromium logs every page console message (errors, uncaught exceptions) as ``...:CONSOLE(...)`` lines."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def assert_not_blank(png: Path) -> None:
    with Image.open(png) as img:
        rgb = np.asarray(img.convert("RGB")).astype(np.int64)
    assert rgb.shape[0] >= 600 and rgb.shape[1] >= 1000
    colours = len(np.unique(rgb.reshape(-1, 3), axis=0))
    dark = (rgb.sum(axis=2) < 200).mean()  # text and the header bar
    assert colours > 50 and 0.01 < dark < 0.5, (colours, dark)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    results = write_records(tmp / "res", hp_t1_records())
    return build_report(results, tmp / "site", tables=["ppap-t1"], draw_figures=False), tmp


def test_console_scan_catches_errors(site):
    """The detector itself: a page that logs an error and throws is caught (so a clean scan means something)."""
    _, tmp = site
    bad = tmp / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><p>x</p><script>console.error("marker-1");'
                   'throw new Error("marker-2");</script></body></html>')
    messages = console_messages(chromium(bad, tmp, "--dump-dom").stderr)
    assert any("marker-1" in m for m in messages) and any("marker-2" in m for m in messages)


@pytest.mark.parametrize("page", ["index.html", "tables/ppap-t1.html", "runs/hp0.html"])
def test_pages_render_without_console_errors(site, page):
    index, tmp = site
    shot = tmp / (page.replace("/", "-") + ".png")
    done = chromium(index.parent / page, tmp, f"--screenshot={shot}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert console_messages(done.stderr) == []
    assert_not_blank(shot)


def test_known_cell_text_in_the_rendered_dom(site):
    """HP ViT-S/8 unsupervised Acc in PPAP Table 1: reported 57.2, reproduced 57.0 ± 1.0 over 3 seeds, within."""
    index, tmp = site
    done = chromium(index.parent / "tables" / "ppap-t1.html", tmp, "--dump-dom")
    assert done.returncode == 0 and console_messages(done.stderr) == []
    dom = tmp / "dom.html"
    dom.write_text(done.stdout)
    table = by_id(parse(dom), "paper-table")
    ok_cells = [td for td in table.iter("td") if "ok" in td.classes]
    assert len(ok_cells) == 1
    texts = [s.all_text() for s in ok_cells[0].iter("span")]
    assert texts[:3] == ["57.2", "57.0 ± 1.0 (n=3)", "-0.2"]
