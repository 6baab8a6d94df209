"""Simulated finalists in the search, percentile SLOs, Pareto fronts, intervals, and `plan compare`."""
import json

import pytest
from typer.testing import CliRunner

from planner import api, catalog
from planner.cli import app
from planner.compare import compare
from planner.costmodel import prepare
from planner.refine import UNSTABLE, simulate_candidate
from planner.schemas import Plan
from planner.search import Candidate, objective_value, violations
from planner.predict import predict
from planner.uncertainty import relative_band, with_interval

SLOS = ["ttft_p90=500ms", "tpot=50ms"]


@pytest.fixture(scope="module")
def rec():
    return api.recommend("llama-8b", SLOS, gpus=["h100", "l40s"], rate_rps=20, trials=40, finalists=6)


def test_finalists_are_simulated_and_ranked_on_percentiles(rec):
    assert rec.simulated > 0 and rec.ranked
    for c in rec.ranked:
        p = c.prediction
        assert p.simulation["stable"] and p.percentiles["ttft_p90_s"] <= 0.5
        assert {"ttft_p90_s", "tpot_p50_s", "e2e_p99_s", "itl_p99_s"} <= set(p.percentiles)
        assert p.percentiles["ttft_p99_s"] >= p.percentiles["ttft_p50_s"]
        assert c.meets_slo and not violations(p, api._slos(SLOS))
    costs = [c.objective_value for c in rec.ranked]
    assert costs == sorted(costs)


def test_intervals_are_attached_with_their_basis(rec):
    p = rec.ranked[0].prediction
    lo, hi = p.interval["ttft_s"]
    assert lo < p.ttft_s < hi and "default" in p.interval_basis
    assert p.interval["ttft_p90_s"][1] > p.percentiles["ttft_p90_s"]


def test_interval_basis_names_the_metrics_of_each_basis():
    """Metrics with a few calibration residuals and metrics with none get different default bands; the basis
    says which metrics each covers instead of contradicting itself."""
    r = api.recommend("llama-8b", ["ttft_p90=2000ms"], gpus=["h200"], rate_rps=24, max_gpus=1)
    basis = r.result.ranked[0].prediction.interval_basis
    assert "a metric" not in basis and "itl:" in basis and "ttft" in basis.split(";")[0]


def test_simulated_latencies_widen_with_the_step_band(rec):
    """The simulated finalists' intervals include the simulator at the step-time band (queueing magnifies it):
    at least as wide as the fixed band, and a step band that saturates the engine gives an open high end."""
    p = rec.ranked[0].prediction
    assert "simulated at step times" in p.interval_basis
    lo, hi = p.interval["ttft_p90_s"]
    assert lo <= p.percentiles["ttft_p90_s"] * 0.93 and hi >= p.percentiles["ttft_p90_s"] * 1.07
    from planner.refine import propagated_band
    hw = prepare(catalog.load_hardware("h100"))
    plan = Plan(model="Llama-3.1-8B", hardware=hw.name, max_num_seqs=64)
    wl = api.workload(rate_rps=8)
    band = propagated_band(catalog.load_model("llama-8b"), hw, plan, wl, (-0.1, 1.0), n_requests=400)
    assert band["ttft_p90_s"][0] < float("inf") and band["ttft_p90_s"][1] == float("inf")


def test_residuals_define_the_band():
    hw = catalog.load_hardware("h100", "datasheet")
    measured = hw.model_copy(update={"measured": {"residuals": {"tpot": [-0.1, -0.05, 0.0, 0.02, 0.04, 0.1]}}})
    lo, hi, basis = relative_band(measured, "tpot")
    assert -0.1 < lo < -0.05 and 0.04 < hi < 0.1 and "residuals" in basis
    assert relative_band(measured, "ttft")[:2] == (-0.15, 0.15)         # too few residuals: default
    pred = predict(catalog.load_model("llama-8b"), hw, Plan(model="Llama-3.1-8B", hardware=hw.name), api.workload())
    assert with_interval(pred, measured).interval["tpot_s"][0] == pytest.approx(pred.tpot_s * (1 + lo))


def test_pareto_fronts_are_non_dominated(rec):
    front = rec.fronts["throughput_vs_speed"]
    assert len(front) >= 2
    xs = [c.prediction.tokens_per_s_per_gpu for c in front]
    ys = [1 / c.prediction.tpot_s for c in front]
    assert xs == sorted(xs, reverse=True) and ys == sorted(ys)


def test_overloaded_plan_is_rejected_by_simulation():
    model = catalog.load_model("llama-8b")
    hw = prepare(catalog.load_hardware("h100", "datasheet"))
    wl = api.workload(rate_rps=80)                                     # ~3x one H100's capacity
    slos = api._slos(["ttft_p90=500ms"])
    plan = Plan(model=model.name, hardware=hw.name)
    pred = predict(model, hw, plan, wl)
    cand = Candidate(plan=plan, prediction=pred, violations={}, objective_value=objective_value(pred, "cost"))
    sim = simulate_candidate(model, hw, wl, slos, "cost", cand, max_gpus=1)
    assert not sim.meets_slo and UNSTABLE in sim.violations
    assert sim.violations[UNSTABLE] > 1.5


def test_compare_two_gpus_with_price_override(tmp_path):
    prices = tmp_path / "prices.yaml"
    prices.write_text("H100-SXM: 1.0\n")
    cmp = compare("llama-8b", ["h100", "l4"], SLOS, rate_rps=10, trials=20, max_gpus=8, prices=str(prices))
    rows = {w.gpu: w for w in cmp.rows}
    h100 = rows["H100-SXM"]
    assert h100.ok and h100.nodes == 1 and h100.power_kw == pytest.approx(h100.gpus * 0.7)
    assert h100.cost_per_hour == pytest.approx(h100.gpus * 1.0)
    assert all(v >= 0 for v in h100.headroom.values())
    assert cmp.rows[0].ok                                   # plans that meet the SLOs come first


def test_compare_gpu_without_a_plan_says_why():
    cmp = compare("llama-70b", ["l4"], ["ttft_p90=100ms"], rate_rps=5, trials=30, max_gpus=2)
    row = cmp.rows[0]
    assert not row.ok and row.reason


def test_compare_cli_json():
    out = CliRunner().invoke(app, ["compare", "--model", "llama-8b", "--gpus", "l40s", "--slo", "tpot=50ms",
                                   "--rate", "5", "--trials", "20", "--max-gpus", "4", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert [r["gpu"] for r in doc["rows"]] == ["L40S"]
    assert all("headroom" in r for r in doc["rows"] if r["meets_slo"])
