"""The Python API behind the CLI: names in, results out. A notebook uses these directly.

    from planner import api
    result = api.recommend("llama-70b", slos=["ttft=200ms"])
    print(result.ranked[0].plan, result.ranked[0].prediction.ttft_s)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

from planner import catalog
from planner.costmodel import Batch, StepBreakdown, prepare, step_breakdown, step_time_s
from planner.errors import UsageError
from planner.memory import memory_breakdown
from planner.parse import parse_slo
from planner.predict import deployment_of, predict as _predict, prefill_time_s
from planner.refine import FINALISTS, Refined, band_of, pareto_fronts, propagated_band, refine, with_simulation
from planner.schemas import SLO, LengthDist, MemoryBreakdown, ModelSpec, Plan, Prediction, Workload
from planner.search import DEFAULT_TRIALS, SearchResult, Space, exhaustive, search, structural_reason
from planner.arrivals import Requests
from planner.simulator import simulate_engine_run
from planner.uncertainty import step_band, with_interval

DEFAULT_INPUT_TOKENS = 1024
DEFAULT_OUTPUT_TOKENS = 256


def workload(input_tokens: float = DEFAULT_INPUT_TOKENS, output_tokens: float = DEFAULT_OUTPUT_TOKENS,
             rate_rps: float | None = None, concurrency: int | None = None) -> Workload:
    if input_tokens <= 0 or output_tokens <= 0:
        raise UsageError("--input and --output must be positive token counts, e.g. --input 1024 --output 256")
    return Workload(input_tokens=LengthDist(mean=input_tokens), output_tokens=LengthDist(mean=output_tokens),
                    rate_rps=rate_rps, concurrency=concurrency)


def check_context(spec: ModelSpec, input_tokens: float, output_tokens: float) -> None:
    """A request longer than the model's context can never be served (vLLM rejects it), so no plan can be."""
    if input_tokens + output_tokens > spec.max_position_embeddings:
        raise UsageError(f"--input {input_tokens:g} + --output {output_tokens:g} tokens exceed {spec.name}'s "
                         f"maximum context of {spec.max_position_embeddings:,} tokens: shorten the prompt or the "
                         "output")


def _slos(slos: Iterable[str | SLO]) -> list[SLO]:
    return [s if isinstance(s, SLO) else parse_slo(s) for s in slos]


def predict(plan: Plan, wl: Workload, profile: str = "auto") -> Prediction:
    """Predicted serving metrics for a plan (model and GPU looked up in the catalogs), with its interval."""
    hw = catalog.load_hardware(plan.hardware, profile)
    return with_interval(_predict(catalog.load_model(plan.model), hw, plan, wl), hw)


def predict_run(plan: Plan, wl: Workload, sent: Requests | None = None, engine: dict | None = None,
                profile: str = "auto") -> Prediction:
    """What a `plan bench run` of this plan should measure. Given the requests it `sent` (arrival offsets and
    lengths) at a rate with no concurrency cap: their simulation on the engine as it reported itself
    (`engine`), so queueing, percentiles and the realised rate are in it. Otherwise the analytic steady state."""
    spec, hw = catalog.load_model(plan.model), catalog.load_hardware(plan.hardware, profile)
    pred = _predict(spec, hw, plan, wl)
    if sent is None or not len(sent) or wl.rate_rps is None or wl.concurrency:
        return with_interval(pred, hw)
    r = simulate_engine_run(spec, hw, plan, sent, engine)
    pred = with_simulation(pred, r, 1, plan.num_gpus, {"requests": len(sent), "stream": "the requests sent",
                                                       "engine_reported": bool(engine)})
    band = band_of([simulate_engine_run(spec, hw, plan, sent, engine, 1 + x) for x in step_band(hw)])
    return with_interval(pred, hw, band)


@dataclass
class Recommendation:
    model: ModelSpec
    workload: Workload
    slos: list[SLO]
    objective: str
    result: SearchResult
    profiles: dict[str, str]                 # GPU name -> "datasheet" | "measured" | "calibrated"
    simulated: int = 0                       # finalists simulated (planner.refine); 0 without a rate
    fronts: dict[str, list] = field(default_factory=dict)   # Pareto fronts: name -> candidates

    @property
    def ranked(self):
        return self.result.ranked

    @property
    def best(self):
        return self.result.ranked[0] if self.result.ranked else None


def recommend(model: str, slos: Iterable[str | SLO] = (), gpus: Iterable[str] | None = None,
              input_tokens: float = DEFAULT_INPUT_TOKENS, output_tokens: float = DEFAULT_OUTPUT_TOKENS,
              rate_rps: float | None = None, max_gpus: int = 64, objective: str = "cost", top: int = 5,
              trials: int = DEFAULT_TRIALS, seed: int = 0, storage: str | None = None, profile: str = "auto",
              prices: str | None = None, exhaustive_search: bool = False,
              progress: Callable[[int, int], None] | None = None, simulate: bool = True,
              finalists: int = FINALISTS) -> Recommendation:
    """Search the deployment space for the plans that meet the SLOs at the best objective.
    With a rate, the analytic finalists are simulated (percentiles, queueing) and ranked again."""
    if objective not in ("cost", "throughput", "latency", "goodput"):
        raise UsageError(f"unknown objective {objective!r}: use cost, throughput, latency or goodput")
    if max_gpus <= 0:
        raise UsageError("--max-gpus must be a positive integer, e.g. --max-gpus 8")
    if rate_rps is not None and not (rate_rps > 0 and math.isfinite(rate_rps)):
        raise UsageError("--rate must be a positive number of requests per second, e.g. --rate 20")
    if objective == "goodput" and not (rate_rps and simulate):
        # Goodput counts the requests that meet the SLOs under load, which only the simulation at a rate gives.
        raise UsageError("--objective goodput ranks by the requests that meet the SLOs when the finalists are "
                         "simulated at a request rate: give --rate (e.g. --rate 20), or use --objective cost")
    spec = catalog.load_model(model)
    wl = workload(input_tokens, output_tokens, rate_rps)
    check_context(spec, input_tokens, output_tokens)
    hws = [catalog.load_hardware(n, profile) for n in gpus] if gpus else catalog.list_hardware(profile)
    if prices:
        hws = catalog.apply_price_overrides(hws, prices)
    slo_list = _slos(slos)
    space = Space(hardware=tuple(hws), max_gpus=max_gpus)
    simulate = simulate and bool(rate_rps)
    keep = max(top, finalists) if simulate else top
    if exhaustive_search:
        result = exhaustive(spec, wl, slo_list, space, objective)
    else:
        result = search(spec, wl, slo_list, space, objective, trials, seed, storage, keep, progress)
    prepared = {h.name: prepare(h) for h in hws}
    refined = refine(spec, wl, slo_list, objective, result, prepared, max_gpus, top, finalists, seed) if simulate \
        else Refined(result, 0, 0, pareto_fronts(result.pool))
    result = with_intervals(refined.result, {h.name: h for h in hws}, spec, wl, prepared, seed)
    return Recommendation(spec, wl, slo_list, objective, result, {h.name: h.provenance.kind for h in hws},
                          refined.simulated, refined.fronts)


def with_intervals(result: SearchResult, hws: dict, model: ModelSpec, wl: Workload, prepared: dict,
                   seed: int = 0) -> SearchResult:
    """The listed candidates with their prediction intervals (planner.uncertainty); a simulated one's
    latencies also through the simulator at the step-time band (queueing magnifies step errors)."""
    def one(c):
        hw = hws[c.plan.hardware]
        band = None
        if c.prediction.simulation:
            band = propagated_band(model, prepared[c.plan.hardware], c.plan, wl, step_band(hw),
                                   c.prediction.simulation["requests"], seed)
        return replace(c, prediction=with_interval(c.prediction, hw, band))
    return replace(result, ranked=[one(c) for c in result.ranked], closest=[one(c) for c in result.closest])


@dataclass
class Explanation:
    model: ModelSpec
    plan: Plan
    workload: Workload
    prefill: StepBreakdown                   # the whole prompt in one step (or its first chunk)
    decode: StepBreakdown                    # one decode step at the batch, mid-generation context
    prefill_s: float
    decode_step_s: float
    prediction: Prediction
    memory: MemoryBreakdown
    profile_kind: str


def explain(model: str, gpu: str, tp: int = 1, pp: int = 1, weight_dtype: str = "bf16", kv_dtype: str = "bf16",
            batch: int = 1, input_tokens: float = DEFAULT_INPUT_TOKENS,
            output_tokens: float = DEFAULT_OUTPUT_TOKENS, max_num_batched_tokens: int = 8192,
            max_num_seqs: int | None = None, gpu_memory_utilization: float = 0.90,
            profile: str = "auto") -> Explanation:
    """Where the time and memory of one configuration go, operator by operator."""
    spec = catalog.load_model(model)
    hw = prepare(catalog.load_hardware(gpu, profile))
    wl = workload(input_tokens, output_tokens, concurrency=batch)
    check_context(spec, input_tokens, output_tokens)
    # The configurations `recommend` never considers cannot run at all: no numbers for them either.
    reason = structural_reason(spec, hw.profile, tp, pp, weight_dtype)
    if reason:
        raise UsageError(f"{spec.name} cannot run on {hw.name} with TP {tp}, PP {pp}, {weight_dtype} weights: "
                         f"{reason}")
    try:
        plan = Plan(model=spec.ref, hardware=hw.name, num_gpus=tp * pp, tp=tp, pp=pp, weight_dtype=weight_dtype,
                    kv_dtype=kv_dtype, max_num_seqs=max_num_seqs or max(batch, 1),
                    max_num_batched_tokens=max_num_batched_tokens, gpu_memory_utilization=gpu_memory_utilization)
    except ValueError as e:
        raise UsageError(f"invalid configuration: {e}") from None
    d = deployment_of(spec, plan)
    inp, out = int(input_tokens), int(output_tokens)
    chunk = min(inp, max_num_batched_tokens)
    prefill = step_breakdown(hw, d, Batch.of([(chunk, 0)]))
    decode_batch = Batch(0, 0, 0.0, 0, batch, batch * (inp + out // 2))
    decode = step_breakdown(hw, d, decode_batch)
    mem = memory_breakdown(hw.profile, d, max_num_batched_tokens, plan.max_num_seqs, gpu_memory_utilization,
                           inp + out, plan.block_size)
    return Explanation(spec, plan, wl, prefill, decode, prefill_time_s(hw, d, plan, inp),
                       step_time_s(hw, d, decode_batch), _predict(spec, hw, plan, wl), mem, hw.kind)
