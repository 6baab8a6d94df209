"""The serving simulator: agreement with the analytic model at no load, queueing laws, preemption,
routers, determinism, trace files."""
import json

import numpy as np
import pytest

from planner import catalog
from planner.arrivals import Requests, load_trace, sample_lengths, synthetic
from planner.costmodel import prepare
from planner.predict import deployment_of, prefill_time_s
from planner.schemas import SLO, LengthDist, Plan, Workload
from planner.simulator import simulate, simulate_workload, weighted_percentiles

MODEL = catalog.load_model("llama-8b")
HW = prepare(catalog.load_hardware("h100", "datasheet"))


def plan(**kw) -> Plan:
    kw.setdefault("num_gpus", kw.get("replicas", 1))
    return Plan(model=MODEL.name, hardware=HW.name, **kw)


def wl(rate, inp=1024, out=128, **kw) -> Workload:
    return Workload(input_tokens=LengthDist(mean=inp), output_tokens=LengthDist(mean=out), rate_rps=rate, **kw)


@pytest.mark.parametrize("inp,budget", [(1024, 8192), (3000, 2048)])
def test_ttft_at_no_load_equals_analytic_prefill(inp, budget):
    p = plan(max_num_batched_tokens=budget)
    r = simulate_workload(MODEL, HW, p, wl(0.01, inp=inp, out=16, arrival="constant"), n_requests=20)
    analytic = prefill_time_s(HW, deployment_of(MODEL, p), p, inp)
    assert r.stat_s("queue", "mean") == 0.0
    assert np.allclose(r.ttft_s, analytic, rtol=0.005)


def test_littles_law_in_steady_state():
    r = simulate_workload(MODEL, HW, plan(), wl(12, out=256), n_requests=3000, seed=3)
    assert r.stable
    done = r.arrival_s + r.e2e_s
    t0, t1 = float(r.arrival_s[500]), float(r.arrival_s[2500])      # a window away from start and drain
    in_system = np.clip(np.minimum(done, t1) - np.maximum(r.arrival_s, t0), 0, None).sum() / (t1 - t0)
    inside = (done >= t0) & (done <= t1)
    throughput = inside.sum() / (t1 - t0)
    assert in_system == pytest.approx(throughput * r.e2e_s[inside].mean(), rel=0.04)


def test_step_scale_stretches_an_idle_engine_and_magnifies_queueing():
    """No load: TTFT scales with the step time. Near capacity: queueing magnifies the same 10%."""
    idle = wl(0.01, out=16, arrival="constant")
    base = simulate_workload(MODEL, HW, plan(), idle, n_requests=10)
    slow = simulate_workload(MODEL, HW, plan(), idle, n_requests=10, step_scale=1.1)
    assert np.allclose(slow.ttft_s, 1.1 * base.ttft_s)
    busy = [simulate_workload(MODEL, HW, plan(), wl(22, out=256), n_requests=1500, seed=1, step_scale=s)
            for s in (1.0, 1.1)]
    assert busy[0].stable
    assert busy[1].stat_s("ttft", "p90") > 1.3 * busy[0].stat_s("ttft", "p90")


def test_async_scheduling_admits_a_step_later():
    """Async scheduling chooses a step's batch while the step before runs: a request arriving during a long
    prefill misses the next step's batch (its TTFT grows by about a step), and at no load nothing changes."""
    from dataclasses import replace as dc_replace

    p = plan(max_num_batched_tokens=8192)
    d = deployment_of(MODEL, p)
    reqs = Requests(np.array([0.0, 0.05]), np.array([8000, 64]), np.array([64, 8]))
    sync = simulate(MODEL, HW, p, reqs, deployment=d)
    overlapped = simulate(MODEL, HW, p, reqs, deployment=dc_replace(d, async_scheduling=True))
    first_step = sync.ttft_s[0]
    assert first_step > 0.05                                            # the second arrives during it
    assert overlapped.ttft_s[0] == pytest.approx(first_step, rel=0.01)        # host work now overlaps
    assert overlapped.ttft_s[1] > sync.ttft_s[1] + 0.5 * (sync.ttft_s[1] - (first_step - 0.05))
    idle = Requests(np.array([0.0, 10.0]), np.array([512, 512]), np.array([8, 8]))
    assert np.allclose(simulate(MODEL, HW, p, idle, deployment=dc_replace(d, async_scheduling=True)).ttft_s,
                       simulate(MODEL, HW, p, idle, deployment=d).ttft_s, rtol=0.03)   # the hidden host work


def test_overload_grows_the_queue():
    ok = simulate_workload(MODEL, HW, plan(), wl(10, out=256), n_requests=1500)
    over = simulate_workload(MODEL, HW, plan(), wl(60, out=256), n_requests=1500)
    assert ok.stable and not over.stable
    assert over.queue_growth > 0.3
    q = over.queue_s
    assert q[-100:].mean() > 5 * q[100:200].mean()


def test_preemption_with_tiny_kv_completes_every_request():
    reqs = synthetic(wl(40, inp=300, out=200), 200, seed=1)
    r = simulate(MODEL, HW, plan(), reqs, kv_tokens=16 * 120)        # 120 blocks: a few sequences at most
    assert r.preemptions > 0
    assert r.failed == 0 and r.completed == 200
    # every request emitted exactly its output length: E2E spans first to last token of `out` tokens
    assert np.all(r.e2e_s >= r.ttft_s)
    assert r.kv_util_max <= 1.0
    assert r.itl_weight.sum() == int((reqs.output_tokens - 1).sum())


@pytest.mark.parametrize("kv,budget,inp,out", [(512, 64, 300, 32), (2048, 128, 600, 100)])
def test_preempting_a_partway_prompt_for_a_decode_block(kv, budget, inp, out):
    """A decode needing a block preempts the newest running request, which may be part-way through its
    prompt (a small budget spreads prompts over several steps); it crashed with an IndexError."""
    p = plan(max_num_batched_tokens=budget, max_num_seqs=budget)
    reqs = synthetic(wl(100, inp=inp, out=out, arrival="constant"), 50, seed=0)
    r = simulate(MODEL, HW, p, reqs, kv_tokens=kv)
    assert r.preemptions > 0
    assert r.failed == 0 and r.completed == 50
    assert r.itl_weight.sum() == int((reqs.output_tokens - 1).sum())


def test_request_longer_than_kv_fails_instead_of_hanging():
    reqs = Requests(np.array([0.0, 0.1]), np.array([100, 5000]), np.array([10, 10]))
    r = simulate(MODEL, HW, plan(), reqs, kv_tokens=1024)
    assert r.failed == 1 and r.completed == 1 and not r.stable


def test_itl_pooled_count_and_tpot_consistency():
    r = simulate_workload(MODEL, HW, plan(), wl(8, out=64), n_requests=300)
    assert r.itl_weight.sum() == 300 * 63
    # mean ITL pooled over all gaps = output-weighted mean of per-request TPOT
    assert r.stat_s("itl", "mean") == pytest.approx(np.average(r.tpot_s, weights=r.output_tokens - 1), rel=1e-9)


@pytest.mark.parametrize("router", ["round-robin", "least-outstanding"])
def test_routers_spread_requests(router):
    p = plan(replicas=3)
    r = simulate_workload(MODEL, HW, p, wl(30, out=128), n_requests=900, router=router)
    counts = np.bincount(r.replica, minlength=3)
    assert counts.sum() == 900 and counts.min() > 200
    if router == "round-robin":
        assert counts.tolist() == [300, 300, 300]


def test_least_outstanding_beats_round_robin_on_skewed_lengths():
    w = Workload(input_tokens=LengthDist(mean=512), output_tokens=LengthDist(kind="lognormal", mean=300, std=600),
                 rate_rps=40)
    rr = simulate_workload(MODEL, HW, plan(replicas=2), w, n_requests=1500, router="round-robin", seed=2)
    lo = simulate_workload(MODEL, HW, plan(replicas=2), w, n_requests=1500, router="least-outstanding", seed=2)
    assert lo.stat_s("e2e", "p99") <= rr.stat_s("e2e", "p99") * 1.02


def test_deterministic_under_a_seed():
    w = wl(20, out=128, arrival="gamma", burstiness=0.5)
    a = simulate_workload(MODEL, HW, plan(replicas=2), w, 500, seed=7, router="least-outstanding").metrics()
    b = simulate_workload(MODEL, HW, plan(replicas=2), w, 500, seed=7, router="least-outstanding").metrics()
    c = simulate_workload(MODEL, HW, plan(replicas=2), w, 500, seed=8, router="least-outstanding").metrics()
    assert a == b and a != c


def test_burstier_arrivals_queue_more():
    smooth = simulate_workload(MODEL, HW, plan(), wl(15, out=128, arrival="constant"), 1500)
    bursty = simulate_workload(MODEL, HW, plan(), wl(15, out=128, arrival="gamma", burstiness=0.2), 1500)
    assert bursty.stat_s("ttft", "p99") > smooth.stat_s("ttft", "p99")


def test_prompts_longer_than_the_budget_are_chunked():
    """Every backend chunks prefill (vLLM V1 always): a prompt over the budget takes several steps, even from
    an older plan file that says chunked_prefill: false (the key is ignored)."""
    p = Plan.model_validate({**plan(max_num_batched_tokens=2048).model_dump(), "chunked_prefill": False})
    assert "chunked_prefill" not in p.model_dump()
    r = simulate_workload(MODEL, HW, p, wl(0.01, inp=3000, out=8), 5)
    assert r.failed == 0
    two_chunks = prefill_time_s(HW, deployment_of(MODEL, p), p, 3000)
    assert np.allclose(r.ttft_s, two_chunks, rtol=0.005)
    whole = prefill_time_s(HW, deployment_of(MODEL, p), p.model_copy(update={"max_num_batched_tokens": 4096}), 3000)
    assert two_chunks > whole


def test_goodput_counts_requests_meeting_every_slo():
    r = simulate_workload(MODEL, HW, plan(), wl(15, out=128), 500,
                          slos=[SLO(metric="ttft", limit_s=0.05), SLO(metric="tpot", limit_s=1.0)])
    good = (r.ttft_s <= 0.05).sum()
    assert r.goodput_rps == pytest.approx(good / r.duration_s)
    assert 0 < r.good_fraction < 1


def test_weighted_percentiles_match_numpy_on_the_expanded_sample():
    rng = np.random.default_rng(0)
    v, w = rng.random(50), rng.integers(0, 5, 50)
    expanded = np.repeat(v, w)
    assert weighted_percentiles(v, w, [0, 50, 90, 99, 100]) == pytest.approx(
        np.percentile(expanded, [0, 50, 90, 99, 100]).tolist())


def test_lengths_and_arrivals():
    rng = np.random.default_rng(0)
    x = sample_lengths(LengthDist(kind="normal", mean=10, std=50), 1000, rng)
    assert x.min() >= 1
    y = sample_lengths(LengthDist(kind="lognormal", mean=500, std=300), 20000, rng)
    assert y.mean() == pytest.approx(500, rel=0.05)
    reqs = synthetic(wl(10), 5000, seed=0)
    assert reqs.offered_rate_rps == pytest.approx(10, rel=0.05)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_trace_files(tmp_path, suffix):
    rows = [(0.5, 100, 20), (0.0, 200, 10), (1.25, 50, 5)]
    path = tmp_path / f"trace{suffix}"
    if suffix == ".csv":
        path.write_text("timestamp,input_tokens,output_tokens\n" + "\n".join(",".join(map(str, r)) for r in rows))
    else:
        path.write_text("\n".join(json.dumps({"arrival_s": t, "prompt_tokens": i, "completion_tokens": o})
                                  for t, i, o in rows))
    reqs = load_trace(path)
    assert reqs.arrival_s.tolist() == [0.0, 0.5, 1.25]
    assert reqs.input_tokens.tolist() == [200, 100, 50]
    r = simulate(MODEL, HW, plan(), reqs)
    assert r.completed == 3
