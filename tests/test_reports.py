"""HTML reports without a browser: data readers, chart maths, tolerance of partial input, the CLI.

The browser checks (drawing, console, network, load time) are in test_reports_browser.py.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import reports
from planner import api, render
from planner import compare as planner_compare
from planner.errors import UsageError
from reports import bench, compare, history, recommend, samples, series
from reports.cli import make_report, register
from reports.requests import load_requests
from reports.scale import Scale


@pytest.fixture(scope="module")
def rec_doc() -> dict:
    """A real `plan recommend --json` document (a narrowed search, to stay quick)."""
    r = api.recommend("llama-70b", ["ttft=200ms"], gpus=["h100", "h200", "mi300x", "a100"], top=10, trials=120)
    return json.loads(json.dumps(render.recommendation_json(r), default=str))


@pytest.fixture(scope="module")
def cmp_doc() -> dict:
    """A real `plan compare --json` document; L4 cannot hold the model in 2 GPUs (a row with a reason)."""
    c = planner_compare.compare("llama-70b", ["h100", "l4"], ["ttft=500ms"], max_gpus=2, trials=20)
    return json.loads(json.dumps(render.comparison_json(c), default=str))


def _no_external_refs(html: str) -> None:
    """Nothing in the page can make the browser fetch: no src/href, no url(), no @import."""
    assert not re.search(r"\s(src|href)\s*=", html)
    assert "url(" not in html and "@import" not in html
    assert "<script" not in html.replace('<script type="application/json" id="report-data">', "")


# --------------------------------------------------------------------------- chart maths
@pytest.mark.parametrize("values,kw,lo,hi", [
    ([0, 1], {}, 0, 1), ([3, 97], {"zero": True}, 0, 100), ([0.3, 1], {"pad": 0.02}, 0.2, 1.2),
    ([0.15, 4000], {"log": True}, 0.1, 10000), ([5, 5], {}, 4.4, 5.6)])
def test_scale_fit_covers_data_with_nice_ends(values, kw, lo, hi):
    s = Scale.fit(values, 0, 100, **kw)
    assert s.lo == pytest.approx(lo) and s.hi == pytest.approx(hi)
    ticks = s.ticks()
    assert ticks[0] == pytest.approx(lo) and ticks[-1] == pytest.approx(hi)
    assert all(s.p0 - 1e-6 <= s(t) <= s.p1 + 1e-6 for t in ticks)


def test_pareto_front_keeps_only_non_dominated_points():
    pts = [(10, 5), (20, 3), (15, 6), (30, 1), (25, 4)]
    assert recommend.pareto_front(pts, True, True) == [0, 1, 3]
    assert recommend.pareto_front(pts, False, False) == [2, 4, 3]


def test_cdf_is_bounded_and_monotonic():
    pts = series.cdf(list(range(100_000)))
    assert len(pts) == series.CDF_POINTS
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(pts, pts[1:]))
    assert pts[-1][1] == 1.0


# --------------------------------------------------------------------------- readers
def test_harness_rows_in_ms_are_read_in_seconds():
    doc = samples.bench_doc(50)
    reqs = load_requests(doc)
    row = next(r for r in doc["samples"] if r["ok"])
    req = next(r for r in reqs if r.index == row["i"])
    assert req.ttft_s == pytest.approx(row["ttft_ms"] / 1e3)
    assert req.tpot_s == pytest.approx(row["tpot_ms"] / 1e3, rel=1e-3)
    assert len(req.itl_s) == row["output_tokens"] - 1
    assert sum(not r.ok for r in reqs) == doc["metrics"]["failed"]


def test_vllm_columns_are_read():
    doc = samples.vllm_result_doc(40)
    reqs = load_requests(doc)
    assert len(reqs) == 40
    assert sum(not r.ok for r in reqs) == doc["failed"]
    assert all(r.start_s is None for r in reqs)          # vLLM keeps no start times


def test_starts_are_rebased_and_unit_aliases_work():
    reqs = load_requests({"requests": [{"start": 1000.5, "ttft": 0.1, "e2el": 1.0, "output_tokens": 10},
                                       {"t_start_s": 1000.0, "ttft_ms": 50, "e2el_ms": 500, "error": "boom"}]})
    assert [r.start_s for r in reqs] == [0.5, 0.0]
    assert reqs[0].ok and reqs[0].tpot_s == pytest.approx(0.1)
    assert not reqs[1].ok and reqs[1].error == "boom"


def test_timeline_sampling_is_bounded_and_keeps_failures():
    reqs = load_requests(samples.bench_doc(3000, fail_fraction=0.02))
    picked = series.sample(reqs)
    assert len(picked) <= series.GANTT_ROWS
    assert sum(not r.ok for r in picked) == min(sum(not r.ok for r in reqs), series.GANTT_ROWS // 4)
    ts = series.over_time(reqs)
    assert all(len(v) == series.TIME_BINS for v in ts.values())
    total = sum(y for _, y in ts["output_tok_s"]) * (ts["output_tok_s"][1][0] - ts["output_tok_s"][0][0])
    assert total == pytest.approx(sum(r.output_tokens for r in reqs if r.ok), rel=1e-6)


def test_likely_range_column():
    doc = {"metrics": {"mean_ttft_ms": 120.0, "p90_ttft_ms": 300.0},
           "vs_predicted": [{"metric": "mean_ttft_ms", "predicted": 100.0, "measured": 120.0, "interval": [90.0, 130.0]},
                            {"metric": "p90_ttft_ms", "predicted": 200.0, "measured": 300.0, "interval": [150.0, 250.0]}]}
    assert bench.likely_ranges(doc) == {"mean_ttft_ms": (90.0, 130.0), "p90_ttft_ms": (150.0, 250.0)}
    page = bench.build(doc).html()
    assert "likely range" in page and "90-130" in page and "150-250 (outside)" in page


def test_comparisons_from_each_shape():
    m = {"mean_ttft_ms": 120.0}
    assert bench.comparisons({"vs_predicted": [{"metric": "mean_ttft_ms", "predicted": 100, "measured": 120}]}, m) \
        == [("mean_ttft_ms", 100.0, 120.0)]
    assert bench.comparisons({"predicted": {"mean_ttft_ms": 100}}, m) == [("mean_ttft_ms", 100.0, 120.0)]
    assert bench.comparisons({"comparison": {"mean_ttft_ms": {"predicted": 100, "measured": 120}}}, m) \
        == [("mean_ttft_ms", 100.0, 120.0)]


def test_history_verdict_shapes_and_order():
    runs = [{"id": 2, "metrics": {"p99_ttft_ms": 2.0}, "compare": {"overall": "regression", "verdicts": [
                {"metric": "ttft", "verdict": "regression"}]}},
            {"id": 1, "metrics": {"p99_ttft_ms": 1.0}, "verdicts": {"p99_ttft_ms": "pass"}}]
    ordered = history.runs_of(runs)
    assert [r["id"] for r in ordered] == [1, 2]
    assert history.verdict_for(ordered[1], "p99_ttft_ms") == "regression"     # base metric "ttft"
    assert history.overall(ordered[1]) == "regression" and history.overall(ordered[0]) == "pass"


def test_compare_report_from_a_real_run(cmp_doc, tmp_path):
    rows = compare.rows_of(cmp_doc)
    assert rows[0]["plan"] == cmp_doc["rows"][0]["plan_label"]
    assert any(k.startswith("headroom ttft") for k in rows[0])
    html = reports.write_compare_html(cmp_doc, tmp_path / "cmp.html").read_text()
    _no_external_refs(html)
    assert "no configuration fits" in html                    # the L4 row keeps its reason
    assert html.count('<svg class="chart"') == 5


def test_compare_flattens_candidate_rows(rec_doc):
    rows = compare.rows_of({"rows": rec_doc["ranked"][:3]})
    assert all(compare.field(r, "gpu") and compare.field(r, "cost_per_million_tokens") for r in rows)


# --------------------------------------------------------------------------- whole reports
def test_recommend_report_from_a_real_run(rec_doc, tmp_path):
    path = reports.write_recommend_html(rec_doc, tmp_path / "rec.html")
    html = path.read_text()
    _no_external_refs(html)
    assert "Roofline of the recommended plan" in html and "Roofline unavailable" not in html
    assert rec_doc["launch_command"] in html
    assert html.count('<svg class="chart"') == 4                # 2 Pareto, roofline, memory


def test_recommend_report_when_no_plan_meets_the_slo(tmp_path):
    r = api.recommend("llama-70b", ["tpot=5ms"], gpus=["l40s", "a100"], top=5, trials=60)
    doc = json.loads(json.dumps(render.recommendation_json(r), default=str))
    html = reports.write_recommend_html(doc, tmp_path / "closest.html").read_text()
    assert "no plan meets the SLO" in html and "Roofline of the closest plan" in html


def test_roofline_failure_is_a_note_not_a_crash(rec_doc):
    def broken(*_):
        raise UsageError("unknown model 'x'")
    html = recommend.build(rec_doc, roofline_fn=broken).html()
    assert "Roofline unavailable: unknown model" in html


@pytest.mark.parametrize("kind,doc", [("recommend", {}), ("bench", {}), ("compare", {}), ("history", [])])
def test_empty_documents_render_with_notes(kind, doc, tmp_path):
    writer = getattr(reports, f"write_{kind}_html")
    html = writer(doc, tmp_path / f"{kind}.html").read_text()
    assert "<html" in html and 'class="note"' in html


def test_bench_report_without_samples_omits_the_per_request_sections(tmp_path):
    doc = {k: v for k, v in samples.bench_doc(50).items() if k != "samples"}
    html = reports.write_bench_html(doc, tmp_path / "b.html").read_text()
    assert "no per-request detail" in html and "HTTP 503" in html      # errors from the run's summary


def test_large_bench_report_stays_small(tmp_path):
    doc = samples.bench_doc(10_000)
    size = reports.write_bench_html(doc, tmp_path / "big.html").stat().st_size
    assert size < 5e6


def test_reports_never_import_torch():
    code = ("import sys, reports, reports.recommend, reports.bench, reports.compare, reports.history, reports.cli; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --------------------------------------------------------------------------- CLI
def _app(loader=None) -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)          # a group, as in `plan`, so that `report` is a sub-command
    register(app, history_loader=loader)
    return app


def test_cli_writes_each_kind(tmp_path, rec_doc):
    docs = {"recommend": rec_doc, "bench": samples.bench_doc(100), "compare": samples.compare_doc(),
            "history": samples.history_runs(8)}
    for kind, doc in docs.items():
        src = tmp_path / f"{kind}.json"
        src.write_text(json.dumps(doc))
        res = CliRunner().invoke(_app(), ["report", kind, "--input", str(src), "--out", str(tmp_path / f"{kind}.html")])
        assert res.exit_code == 0, res.output
        assert (tmp_path / f"{kind}.html").stat().st_size > 1000


def test_cli_history_from_a_db_through_the_loader(tmp_path):
    seen = []
    app = _app(lambda p: seen.append(p) or samples.history_runs(4))
    db = tmp_path / "runs.db"
    db.touch()
    res = CliRunner().invoke(app, ["report", "history", "--db", str(db), "--out", str(tmp_path / "h.html"),
                                   "--metric", "p99_ttft_ms"])
    assert res.exit_code == 0, res.output
    assert seen[0] == db


@pytest.mark.parametrize("kind,doc_of,needle", [
    ("recommend", lambda rec: samples.bench_doc(20), "holds a benchmark run (`plan bench run --json`): render it "
                                                      "with `plan report bench`"),
    ("bench", lambda rec: rec, "holds a recommendation (`plan recommend --json`): render it with "
                               "`plan report recommend`"),
    ("compare", lambda rec: {"overall": "pass", "threshold": 0.05, "verdicts": []},
     "holds regression verdicts (`plan bench compare --json`)"),
    ("history", lambda rec: samples.bench_doc(20), "`plan report history` needs --db"),
    ("bench", lambda rec: {"runs": samples.history_runs(3)}, "render it with `plan report history`"),
])
def test_cli_refuses_another_commands_document(tmp_path, rec_doc, kind, doc_of, needle):
    src = tmp_path / "in.json"
    src.write_text(json.dumps(doc_of(rec_doc)))
    with pytest.raises(UsageError, match=re.escape(needle)) as e:
        make_report(kind, src, tmp_path / "o.html")
    assert "\n" not in str(e.value) and not (tmp_path / "o.html").exists()


@pytest.mark.parametrize("kind,src,db,message", [
    ("nope", "x.json", None, "unknown report"),
    ("bench", None, None, "needs --input"),
    ("bench", "/nonexistent.json", None, "not found"),
    ("history", None, "r.db", "not available"),
    ("history", None, "/nonexistent.db", "no results database at /nonexistent.db: `plan bench run` records"),
])
def test_cli_errors_name_the_fix(kind, src, db, message, tmp_path):
    loader = (lambda p: []) if db == "/nonexistent.db" else None
    with pytest.raises(UsageError, match=re.escape(message)):
        make_report(kind, Path(src) if src else None, tmp_path / "o.html", Path(db) if db else None,
                    history_loader=loader)
