"""Second stage of the search: simulate the analytic finalists, fill their percentiles, re-rank.

The analytic screen (planner.search) checks a percentile SLO against the predicted mean, which can only be
optimistic, so every plan it passes is a candidate; the best FINALISTS distinct ones (by objective) are
simulated under the workload's arrival process. Each is simulated as one replica at rate / replicas
(what an even router gives it; Poisson splitting is slightly burstier than round-robin, so this errs on
the safe side), which keeps the cost independent of the replica count. A finalist that misses an SLO by
queueing gets one more replica and is simulated again. A run whose queue grows without bound
(utilisation >= 1) is rejected with that reason.

Pareto fronts over every scored plan: throughput per GPU vs per-user speed (1/TPOT), and cost per million
tokens vs latency (E2E).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from planner.costmodel import Hardware
from planner.schemas import SLO, ModelSpec, Plan, Prediction, Workload
from planner.search import Candidate, SearchResult, objective_value, violations
from planner.simulator import SimResult, simulate_workload

FINALISTS = 10
SIM_REQUESTS = 600                  # per finalist: a p99 then rests on ~5 samples above it
WARMUP_FRACTION = 0.1               # the first requests meet an empty engine: not steady state
EXTRA_REPLICAS = 1                  # tries with more replicas when an SLO is missed by less than...
RETRY_BELOW = 2.0                   # ...this factor (further off, a replica more will not rescue it)
UNSTABLE = "utilisation>=1 (queue grows)"
FRONT_POINTS = 8


def one_replica(plan: Plan, workload: Workload) -> tuple[Plan, Workload]:
    """What the simulator runs for a plan: one of its replicas, at its share of the rate."""
    return (plan.model_copy(update={"replicas": 1, "num_gpus": plan.gpus_per_replica}),
            workload.model_copy(update={"rate_rps": workload.rate_rps / plan.replicas}))


def simulated_prediction(model: ModelSpec, hw: Hardware, plan: Plan, workload: Workload, slos: list[SLO],
                         pred: Prediction, n_requests: int = SIM_REQUESTS, seed: int = 0) -> Prediction:
    """`pred` with simulated means, percentiles and throughput (one replica at rate / replicas)."""
    one, wl = one_replica(plan, workload)
    r = simulate_workload(model, hw, one, wl, n_requests, seed, slos=slos, warmup_fraction=WARMUP_FRACTION)
    return with_simulation(pred, r, plan.replicas, plan.num_gpus, {
        "requests": n_requests, "replicas_simulated": 1, "rate_per_replica_rps": wl.rate_rps,
        "warmup_fraction": WARMUP_FRACTION, "seed": seed})


def with_simulation(pred: Prediction, r: SimResult, replicas: int, num_gpus: int, summary: dict) -> Prediction:
    """`pred` with a simulation's means, percentiles and throughput (`replicas` copies of the simulated one,
    on `num_gpus` in all) and its summary."""
    thr = r.output_throughput_tok_s * replicas
    cost_h = pred.cost_per_hour
    summary = {**summary, "stable": r.stable, "request_throughput_rps": r.request_throughput_rps * replicas,
               "queue_growth": r.queue_growth, "utilisation_estimate": utilisation(r.queue_growth),
               "goodput_rps": r.goodput_rps * replicas, "good_fraction": r.good_fraction,
               "preemptions": r.preemptions, "kv_util_mean": r.kv_util_mean, "kv_util_max": r.kv_util_max,
               "mean_queue_s": r.stat_s("queue", "mean"), "failed": r.failed}
    return pred.model_copy(update={
        "ttft_s": r.stat_s("ttft", "mean"), "tpot_s": r.stat_s("tpot", "mean"), "e2e_s": r.stat_s("e2e", "mean"),
        "throughput_tok_s": thr, "tokens_per_s_per_gpu": thr / num_gpus,
        "cost_per_million_tokens": cost_h / (thr * 3600) * 1e6 if thr else math.inf,
        "batch_size": r.metrics()["concurrency_littles_law"], "percentiles": r.percentiles_s(),
        "simulation": summary})


def propagated_band(model: ModelSpec, hw: Hardware, plan: Plan, workload: Workload, step_band: tuple[float, float],
                    n_requests: int = SIM_REQUESTS, seed: int = 0) -> dict[str, list[float]]:
    """Prediction field -> [low, high] of the simulated latencies when every step takes (1 + lo) and (1 + hi)
    times the cost model's time (planner.uncertainty). A run that saturates gives infinity."""
    one, wl = one_replica(plan, workload)
    return band_of([simulate_workload(model, hw, one, wl, n_requests, seed, warmup_fraction=WARMUP_FRACTION,
                                      step_scale=1 + x) for x in step_band])


def band_of(ends: list[SimResult]) -> dict[str, list[float]]:
    """Prediction field -> [low, high] of the latencies of two simulations (the fast and the slow end);
    infinity where that end's queue grows without bound."""
    vals = [{"ttft_s": r.stat_s("ttft", "mean"), "tpot_s": r.stat_s("tpot", "mean"), "e2e_s": r.stat_s("e2e", "mean"),
             **r.percentiles_s()} for r in ends]
    vals = [{k: v if r.stable else math.inf for k, v in d.items()} for d, r in zip(vals, ends)]
    return {k: [vals[0][k], vals[1][k]] for k in vals[0]}


def utilisation(queue_growth: float) -> float:
    """Offered / served rate implied by the queue's growth: a queue growing g s per s serves 1 - g of it."""
    return 1.0 / (1.0 - queue_growth) if queue_growth < 0.99 else 100.0


def _judge(plan: Plan, pred: Prediction, slos: list[SLO], objective: str) -> Candidate:
    viol = violations(pred, slos)
    if pred.simulation and not pred.simulation["stable"]:
        viol[UNSTABLE] = pred.simulation["utilisation_estimate"]
    return Candidate(plan=plan, prediction=pred, violations=viol, objective_value=objective_value(pred, objective))


def simulate_candidate(model: ModelSpec, hw: Hardware, workload: Workload, slos: list[SLO], objective: str,
                       c: Candidate, max_gpus: int, seed: int = 0) -> Candidate:
    """The finalist simulated; with up to EXTRA_REPLICAS more replicas while it misses an SLO narrowly."""
    plan, pred = c.plan, c.prediction
    best = None
    for extra in range(EXTRA_REPLICAS + 1):
        if extra:
            replicas = plan.replicas + 1
            if replicas * plan.gpus_per_replica > max_gpus:
                break
            cost_h = pred.cost_per_hour / plan.num_gpus * replicas * plan.gpus_per_replica
            plan = plan.model_copy(update={"replicas": replicas, "num_gpus": replicas * plan.gpus_per_replica})
            pred = pred.model_copy(update={"cost_per_hour": cost_h})
        cand = _judge(plan, simulated_prediction(model, hw, plan, workload, slos, pred, seed=seed), slos,
                      objective)
        best = cand if best is None or cand.rank_key < best.rank_key else best
        if cand.meets_slo or max(cand.violations.values()) >= RETRY_BELOW:
            break
    return best


@dataclass
class Refined:
    result: SearchResult
    simulated: int                           # finalist simulations run
    rejected_unstable: int
    fronts: dict[str, list[Candidate]]


def refine(model: ModelSpec, workload: Workload, slos: list[SLO], objective: str, result: SearchResult,
           hws: dict[str, Hardware], max_gpus: int, top: int, finalists: int = FINALISTS,
           seed: int = 0) -> Refined:
    """Simulate the analytic finalists (when the workload has a rate) and rank them again."""
    if not workload.rate_rps:
        return Refined(result, 0, 0, pareto_fronts(result.pool or result.ranked + result.closest))
    picked = (result.ranked or result.closest)[:finalists]
    sims = [simulate_candidate(model, hws[c.plan.hardware], workload, slos, objective, c, max_gpus, seed)
            for c in picked]
    ok = sorted((c for c in sims if c.meets_slo), key=lambda c: (c.objective_value, c.plan.num_gpus))
    rest = sorted((c for c in sims if not c.meets_slo), key=lambda c: c.rank_key)
    unstable = sum(1 for c in sims if UNSTABLE in c.violations)
    refined = replace(result, ranked=ok[:top], closest=[] if ok else rest[:top],
                      rejected={**result.rejected, **({"simulated-unstable": unstable} if unstable else {})})
    by_key = {_key(c.plan): c for c in sims}
    pool = [by_key.get(_key(c.plan), c) for c in (result.pool or picked)]
    return Refined(refined, len(sims), unstable, pareto_fronts(pool))


def _key(p: Plan) -> tuple:
    return p.hardware, p.tp, p.pp, p.weight_dtype, p.kv_dtype, p.max_num_seqs, p.max_num_batched_tokens


def pareto(cands: list[Candidate], xs, ys) -> list[Candidate]:
    """Candidates not dominated on (x, y), both to be maximised, sorted by x; at most FRONT_POINTS, spread."""
    pts = sorted(cands, key=lambda c: (-xs(c), -ys(c)))
    front, best_y = [], -math.inf
    for c in pts:
        if ys(c) > best_y:
            front.append(c)
            best_y = ys(c)
    if len(front) > FRONT_POINTS:
        step = (len(front) - 1) / (FRONT_POINTS - 1)
        front = [front[round(i * step)] for i in range(FRONT_POINTS)]
    return front


def pareto_fronts(pool: list[Candidate]) -> dict[str, list[Candidate]]:
    """Among plans meeting the SLOs (all scored plans when fewer than two do)."""
    ok = [c for c in pool if c.meets_slo and math.isfinite(c.prediction.tpot_s)]
    cands = ok if len(ok) >= 2 else [c for c in pool if math.isfinite(c.prediction.tpot_s)]
    return {
        "throughput_vs_speed": pareto(cands, lambda c: c.prediction.tokens_per_s_per_gpu,
                                      lambda c: 1.0 / c.prediction.tpot_s),
        "cost_vs_latency": pareto(cands, lambda c: -c.prediction.cost_per_million_tokens,
                                  lambda c: -c.prediction.e2e_s),
    }
