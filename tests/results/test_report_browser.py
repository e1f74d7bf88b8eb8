"""A real browser check: the report renders in headless Chromium with the right number of points.

Uses Playwright's Python package to drive the system's Chromium (Debian's ``chromium`` package,
``/usr/bin/chromium``); nothing is downloaded. Skipped when Chromium is missing, unless
``GHOSTNAS_REQUIRE_BROWSER=1`` (set by CI), in which case that is a failure.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import pytest

from results.report import PLOT_IDS, write_report
from results.runfolder import RunFolder
from tests.helpers import REFERENCES, make_run

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REQUIRED = os.environ.get("GHOSTNAS_REQUIRE_BROWSER") == "1"


def _browser_or_skip():
    module = sys.modules[__name__]  # read at call time, so a test can point them elsewhere
    why = None
    if not module.CHROMIUM.exists():
        why = f"{module.CHROMIUM} not found (apt-get install chromium)"
    else:
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            why = "the playwright Python package is not installed"
    if why:
        if module.REQUIRED:
            pytest.fail(f"GHOSTNAS_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    return sync_playwright


# Per scatter trace of a plot: its name, and the point markers Plotly drew for it in the SVG.
COUNT_POINTS = """id => {
    const gd = document.getElementById(id);
    const traces = gd.querySelectorAll('.scatterlayer .trace');
    return gd._fullData.map((t, i) => ({
        meta: t.meta, name: t.name,
        points: traces[i] ? traces[i].querySelectorAll('path.point').length : -1}));
}"""


def test_report_renders_in_chromium(tmp_path):
    sync_playwright = _browser_or_skip()
    n, failed, early = 14, 3, 2
    rows = make_run(tmp_path, n=n, failed=failed, early_stopped=early)
    page_path = write_report(tmp_path)
    with open(RunFolder(tmp_path).pareto_path, newline="") as fh:
        front_size = sum(r["pareto_flops"] == "True" for r in csv.DictReader(fh))
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # Offline: any request that is not the file itself would be a CDN or similar.
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_path.resolve().as_uri(), wait_until="load", timeout=20_000)
            page.wait_for_function(
                "ids => ids.every(id => { const gd = document.getElementById(id);"
                " return gd && gd._fullLayout && gd.querySelector('.scatterlayer'); })",
                arg=list(PLOT_IDS.values()), timeout=20_000)
            assert page.evaluate("typeof window.Plotly") == "object"
            counts = {pid: page.evaluate(COUNT_POINTS, pid)
                      for pid in (PLOT_IDS["flops"], PLOT_IDS["latency_ms"])}
            hover_ok = page.evaluate(
                "() => document.getElementById('plot-flops')._fullData[0].hovertext[0]")
        finally:
            browser.close()
    assert errors == [] and requests == [page_path.resolve().as_uri()]
    for pid, traces in counts.items():
        by_meta = {t["meta"]: t["points"] for t in traces}
        assert by_meta["candidates"] == n - failed - early, (pid, traces)
        assert by_meta["early_stopped"] == early, (pid, traces)
        assert by_meta["references"] == len(REFERENCES), (pid, traces)
        if pid == PLOT_IDS["flops"]:
            assert by_meta["front"] == front_size
    assert rows and "M MACs" in hover_ok and "top1" in hover_ok


def test_missing_browser_skips_unless_required(monkeypatch, tmp_path):
    module = sys.modules[__name__]
    monkeypatch.setattr(module, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setattr(module, "REQUIRED", False)
    with pytest.raises(pytest.skip.Exception, match="not found"):
        _browser_or_skip()
    monkeypatch.setattr(module, "REQUIRED", True)
    with pytest.raises(pytest.fail.Exception, match="GHOSTNAS_REQUIRE_BROWSER=1"):
        _browser_or_skip()
