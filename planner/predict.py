"""Analytic serving prediction for one plan: TTFT, TPOT, throughput, cost (means, steady state).

A replica runs B sequences at once. Every step each running sequence emits one token, and prompts are
prefilled in chunks that share the step's token budget with the decodes (chunked prefill). So the
steady-state step has B decodes plus, amortised, B x input/output prompt tokens, and

    TPOT = that step's time,   throughput = B / TPOT,   TTFT = the prompt's chunks, each sharing a step.

B is the workload's concurrency, or the concurrency a target rate implies (Little's law: B = rate x E2E,
solved by fixed-point iteration), or the most the KV cache and max_num_seqs allow.
The simulator (planner.simulator) adds queueing and percentiles on top of the same step times.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from planner.costmodel import (FP8_TUNED_ROWS, POW2_DECODE_GRAPH_SIZES, Batch, Deployment, Hardware, prepare,
                               step_breakdown, step_time_s)
from planner.memory import memory_breakdown
from planner.schemas import HardwareProfile, MemoryBreakdown, ModelSpec, Plan, Prediction, Workload

FIXED_POINT_ITERATIONS = 30


def deployment_of(model: ModelSpec, plan: Plan) -> Deployment:
    return Deployment(model, plan.tp, plan.pp, plan.weight_dtype, plan.kv_dtype)


def engine_features(report: dict) -> dict:
    """Deployment fields from what the built-in engine reported of itself (its `kv_cache` start-up event, or
    a trace's config line): its decode graph sizes, the prefill path it took, whether it scheduled asynchronously,
    whether it chose its fp8 path at 2-16 rows per shape (`fp8_gemv_rows`), and which, and the row counts where it
    folded the RMSNorms into the GEMVs (`fused_norms`). Engines before piecewise
    graphs and varlen prefill reported neither: their prefill was eager, per sequence; engines before 2026-12-03
    did not list their graph sizes: powers of two."""
    return {"graph_batch_sizes": tuple(report.get("cuda_graph_batch_sizes") or POW2_DECODE_GRAPH_SIZES),
            "piecewise_sizes": tuple(report.get("piecewise_sizes") or ()), "raced_sizes": (),
            "varlen_prefill": bool(report.get("varlen_prefill")),
            "whole_graph_prefill": bool(report.get("whole_graph_prefill")),
            "whole_graph_mixed": bool(report.get("whole_graph_mixed")),
            # engines before the cap captured them at every bucket
            "whole_graph_max_tokens": int(report.get("whole_graph_max_tokens")
                                          or max(report.get("piecewise_sizes") or [0])),
            "async_scheduling": bool(report.get("async_scheduling")),
            "fp8_rows_tuned": "fp8_gemv_rows" in report,
            "fp8_gemv_choices": fp8_gemv_choices(report.get("fp8_gemv_rows") or {}),
            "folded_norm_rows": frozenset(int(r) for r, v in (report.get("fused_norms") or {}).items() if v["folded"])}


def fp8_gemv_choices(rows_by_shape: dict[str, list[int]]) -> frozenset[tuple[int, int, int, bool]]:
    """The engine's `fp8_gemv_rows` ({"NxK": [row buckets where its GEMV won]}) as Deployment.fp8_gemv_choices."""
    out = set()
    for shape, won in rows_by_shape.items():
        n, k = (int(v) for v in shape.split("x"))
        out.update((n, k, r, r in won) for r in FP8_TUNED_ROWS)
    return frozenset(out)


def engine_deployment(model: ModelSpec, plan: Plan, report: dict) -> Deployment:
    """The plan as a served engine ran it (`report`: see engine_features; empty: an engine that said nothing)."""
    return replace(deployment_of(model, plan), served=True, **engine_features(report))


@dataclass(frozen=True)
class Operating:
    """The steady state of one replica at concurrency `batch`."""
    batch: float
    step_s: float              # mixed step time = TPOT
    prefill_tokens_per_step: float
    output_tok_s: float        # per replica
    ttft_s: float


def prefill_time_s(hw: Hardware, d: Deployment, plan: Plan, input_tokens: int, decode_seqs: int = 0,
                   decode_ctx_tokens: int = 0) -> float:
    """Time to prefill one prompt in chunks, each chunk sharing its step with `decode_seqs` decodes."""
    chunk = max(1, min(input_tokens, plan.max_num_batched_tokens - decode_seqs))
    total, done = 0.0, 0
    while done < input_tokens:
        c = min(chunk, input_tokens - done)
        b = Batch(c, 1, c * (done + (c + 1) / 2), done + c, decode_seqs, decode_ctx_tokens)
        total += step_time_s(hw, d, b)
        done += c
    return total


def steady_state(hw: Hardware, d: Deployment, plan: Plan, batch: float, input_tokens: float,
                 output_tokens: float) -> Operating:
    """Mixed steps of `batch` running sequences (decodes + amortised prefill chunks)."""
    b = max(1.0, batch)
    n = math.ceil(b)
    budget = plan.max_num_batched_tokens
    want = b * input_tokens / max(output_tokens, 1.0)     # prompt tokens per step to keep B sequences fed
    prefill = min(want, max(0.0, budget - n))
    pf_tok = int(round(prefill))
    # A chunk of the mean prompt length, attending to half the prompt before it on average.
    pairs = pf_tok * (input_tokens / 2 + (min(pf_tok, input_tokens) + 1) / 2) if pf_tok else 0.0
    pf_seqs = math.ceil(pf_tok / input_tokens) if pf_tok else 0
    ctx = int(n * (input_tokens + output_tokens / 2))
    step = step_time_s(hw, d, Batch(pf_tok, pf_seqs, pairs, pf_tok + pf_seqs * int(input_tokens / 2), n, ctx))
    # When prefill cannot keep up within the budget, sequences wait for their prompts: fewer tokens out.
    fed = min(1.0, prefill / want) if want else 1.0
    out_tok_s = b * fed / step
    ttft = prefill_time_s(hw, d, plan, int(input_tokens), n, ctx)
    return Operating(b, step, prefill, out_tok_s, ttft)


def max_batch(mem: MemoryBreakdown, plan: Plan) -> int:
    return max(1, min(plan.max_num_seqs, mem.max_concurrent_seqs))


def solve_rate(hw: Hardware, d: Deployment, plan: Plan, rate_per_replica: float, inp: float, out: float,
               full: Operating) -> Operating | None:
    """Concurrency that a request rate implies (Little's law), or None when the replica can't keep up.
    `full` is the steady state at the largest batch the replica holds."""
    b_max = full.batch
    if full.output_tok_s <= rate_per_replica * out:
        return None                                      # utilisation >= 1: the queue grows without bound
    # B -> rate x E2E(B) does not decrease with B, so from B = 1 plain iteration climbs to the least fixed point
    # without overshooting it. Converged means the B priced implies itself: graph padding makes E2E jump at a
    # bucket (Llama-3.1-70B fp8 on 8 A100s at 90% load: B 51.5 pads to the 64 graph, whose E2E implies B 72.8),
    # so a B one step short of its own image is not yet the answer, however small the step.
    b = 1.0
    for _ in range(FIXED_POINT_ITERATIONS):
        op = steady_state(hw, d, plan, b, inp, out)
        e2e = op.ttft_s + (out - 1) * op.step_s
        nb = min(float(b_max), max(1.0, rate_per_replica * e2e))
        if abs(nb - b) < 0.01 * b:
            return op
        b = nb
    return steady_state(hw, d, plan, b, inp, out)


def predict(model: ModelSpec, hw: HardwareProfile | Hardware, plan: Plan, workload: Workload) -> Prediction:
    """Mean-value prediction for a plan under a workload. Raises nothing for plans that do not fit:
    the memory breakdown says so (fits=False) and the latencies are infinite."""
    h = prepare(hw)
    d = deployment_of(model, plan)
    inp, out = workload.input_tokens.mean, workload.output_tokens.mean
    mem = memory_breakdown(h.profile, d, plan.max_num_batched_tokens, plan.max_num_seqs,
                           plan.gpu_memory_utilization, inp + out, plan.block_size)
    cost_h = plan.num_gpus * h.profile.price_per_gpu_hour
    if not mem.fits:
        inf = float("inf")
        return Prediction(ttft_s=inf, tpot_s=inf, e2e_s=inf, throughput_tok_s=0.0, tokens_per_s_per_gpu=0.0,
                          requests_per_s=0.0, cost_per_million_tokens=inf, cost_per_hour=cost_h,
                          batch_size=0, bottleneck="memory-capacity", memory=mem, profile_kind=h.kind)
    b_max = max_batch(mem, plan)
    full = steady_state(h, d, plan, b_max, inp, out)
    if workload.rate_rps:
        # An unsustainable rate reports the saturated state; requests_per_s below says it falls short.
        op = solve_rate(h, d, plan, workload.rate_rps / plan.replicas, inp, out, full) or full
    elif workload.concurrency:
        op = steady_state(h, d, plan, min(b_max, workload.concurrency / plan.replicas), inp, out)
    else:
        op = full
    thr = op.output_tok_s * plan.replicas
    # At a rate, a replica that keeps up serves exactly what arrives (a stable queue's output is its input), and
    # one that cannot serves its capacity: the saturated state. The operating point's B / TPOT only approximates the
    # rate (the fixed point stops within 1%, and graph padding makes step time jump: Gemma-2-27B fp8 on 4 x TP2
    # H100s came out at 87% of a rate that 3 replicas carried in full), so served tokens come from the capacity.
    served = min(full.output_tok_s * plan.replicas, workload.rate_rps * out) if workload.rate_rps else thr
    ctx = int(op.batch * (inp + out / 2))
    decode = Batch(0, 0, 0.0, 0, math.ceil(op.batch), ctx)
    bottleneck = step_breakdown(h, d, decode).bottleneck
    return Prediction(
        ttft_s=op.ttft_s, tpot_s=op.step_s, e2e_s=op.ttft_s + (out - 1) * op.step_s,
        throughput_tok_s=served, tokens_per_s_per_gpu=served / plan.num_gpus,
        requests_per_s=full.output_tok_s * plan.replicas / out,
        cost_per_million_tokens=cost_h / (served * 3600) * 1e6 if served else math.inf,
        cost_per_hour=cost_h, batch_size=op.batch, bottleneck=bottleneck, memory=mem, profile_kind=h.kind)
