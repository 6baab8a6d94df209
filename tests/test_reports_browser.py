"""Every report kind opened in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright):
no console error, no request leaving the file, every chart drawn, a screenshot per colour scheme, a
printable PDF, and a 10,000-request benchmark report under 5 MB that opens in under 2 s.

Set up with scripts/install_browser.sh (never `playwright install`: it downloads a browser).
Screenshots and load times land in tests/_artifacts/.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import reports
from planner import api, render
from planner import compare as planner_compare
from reports import samples

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "_artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MAX_BYTES = 5_000_000
MAX_LOAD_S = 2.0

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: run scripts/install_browser.sh")]

# Charts each report must draw with the fixtures below.
EXPECTED_CHARTS = {"recommend": 4, "bench": 9, "vllm": 4, "compare": 5, "history": 5}

_CHART_PROBE = """() => [...document.querySelectorAll('svg.chart')].map(svg => {
    const marks = [...svg.querySelectorAll('.mark')];
    const drawn = marks.filter(m => { const b = m.getBBox(); return b.width > 0 || b.height > 0; });
    const box = svg.getBoundingClientRect();
    return {label: svg.getAttribute('aria-label'), marks: marks.length, drawn: drawn.length,
            width: box.width, height: box.height};
})"""
# Time to the load event, and to the first frame painted after it (the page is then on screen).
_LOAD_PROBE = """() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    done({load_event_ms: nav.loadEventEnd, dom_content_loaded_ms: nav.domContentLoadedEventEnd,
          painted_ms: performance.now()});
})))"""


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")      # screenshots are outputs, never committed
    return ARTIFACTS


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Chromium is installed but Playwright for Python is not: run scripts/install_browser.sh")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def report_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("reports")
    rec = api.recommend("llama-70b", ["ttft=200ms"], gpus=["h100", "h200", "mi300x", "a100"], top=10, trials=120)
    rec_doc = json.loads(json.dumps(render.recommendation_json(rec), default=str))
    cmp = planner_compare.compare("llama-70b", ["h100", "l4", "mi300x"], ["ttft=500ms"], max_gpus=2, trials=20)
    cmp_doc = json.loads(json.dumps(render.comparison_json(cmp), default=str))
    return {"recommend": reports.write_recommend_html(rec_doc, d / "recommend.html"),
            "bench": reports.write_bench_html(samples.bench_doc(500), d / "bench.html"),
            "vllm": reports.write_bench_html(samples.vllm_result_doc(), d / "vllm.html"),
            "compare": reports.write_compare_html(cmp_doc, d / "compare.html"),
            "history": reports.write_history_html(samples.history_runs(), d / "history.html")}


class Opened:
    """A report open in a fresh browser context, with what it logged and what it asked the network for."""

    def __init__(self, browser, path: Path, scheme: str = "light"):
        self.context = browser.new_context(color_scheme=scheme, viewport={"width": 1200, "height": 900})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type in ("error", "warning") and self.errors.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        started = time.perf_counter()
        self.page.goto(path.as_uri(), wait_until="load")
        self.timing = self.page.evaluate(_LOAD_PROBE)
        self.wall_s = time.perf_counter() - started

    def _route(self, route):
        url = route.request.url
        if url.startswith("file:"):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def close(self):
        self.context.close()


@pytest.mark.parametrize("kind", list(EXPECTED_CHARTS))
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_report_opens_clean_and_draws_every_chart(browser, report_files, artifacts, kind, scheme):
    path = report_files[kind]
    o = Opened(browser, path, scheme)
    try:
        assert o.errors == []
        assert o.blocked == []
        assert o.requests == [path.as_uri()]                  # the file itself, nothing else
        charts = o.page.evaluate(_CHART_PROBE)
        assert len(charts) == EXPECTED_CHARTS[kind], [c["label"] for c in charts]
        for c in charts:
            assert c["marks"] > 0 and c["drawn"] > 0, c
            assert c["width"] > 100 and c["height"] > 50, c
        shot = artifacts / f"{kind}-{scheme}.png"
        o.page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
    finally:
        o.close()


@pytest.mark.parametrize("kind", ["recommend", "bench"])
def test_report_prints(browser, report_files, artifacts, kind):
    o = Opened(browser, report_files[kind])
    try:
        o.page.emulate_media(media="print")
        pdf = o.page.pdf(path=str(artifacts / f"{kind}.pdf"), format="A4")
        assert pdf[:4] == b"%PDF" and len(pdf) > 20_000
        assert o.errors == []
    finally:
        o.close()


def test_10k_request_bench_report_is_small_and_fast(browser, tmp_path, artifacts):
    doc = samples.bench_doc(10_000)
    t = time.perf_counter()
    path = reports.write_bench_html(doc, tmp_path / "bench-10k.html")
    render_s = time.perf_counter() - t
    size = path.stat().st_size
    assert size < MAX_BYTES
    # Best of three opens, each in a fresh context: the first also pays for the browser's own warm-up.
    runs = []
    for _ in range(3):
        o = Opened(browser, path)
        try:
            assert o.errors == [] and o.blocked == []
            assert all(c["drawn"] > 0 for c in o.page.evaluate(_CHART_PROBE))
            runs.append({**o.timing, "wall_s": o.wall_s})
        finally:
            o.close()
    best = min(runs, key=lambda r: r["painted_ms"])
    (artifacts / "load_times.json").write_text(json.dumps(
        {"requests": 10_000, "bytes": size, "render_s": render_s, "runs": runs}, indent=1))
    assert best["load_event_ms"] < MAX_LOAD_S * 1e3
    assert best["painted_ms"] < MAX_LOAD_S * 1e3
    assert best["wall_s"] < MAX_LOAD_S
