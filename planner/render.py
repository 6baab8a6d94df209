"""Turning API results into terminal tables and JSON documents (no computation here)."""
from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table

from planner.api import Explanation, Recommendation
from planner.launch import vllm_command
from planner.search import Candidate, metric_value, why_none_scored


def _ms(s: float) -> str:
    return "inf" if not math.isfinite(s) else f"{s * 1e3:,.1f}"


def _gb(b: float) -> str:
    return f"{b / 1e9:,.1f}"


def plan_label(c: Candidate) -> str:
    p = c.plan
    par = f"TP{p.tp}" + (f"xPP{p.pp}" if p.pp > 1 else "")
    reps = f" x{p.replicas}" if p.replicas > 1 else ""
    return f"{p.num_gpus}x {p.hardware} {par}{reps} w:{p.weight_dtype} kv:{p.kv_dtype}"


def candidate_json(c: Candidate) -> dict:
    return {"plan": c.plan.model_dump(mode="json"), "prediction": c.prediction.model_dump(mode="json"),
            "meets_slo": c.meets_slo, "violations": c.violations, "objective_value": c.objective_value}


def recommendation_json(r: Recommendation) -> dict:
    best = r.best
    return {
        "model": r.model.name, "objective": r.objective,
        "workload": r.workload.model_dump(mode="json"), "slos": [s.model_dump(mode="json") for s in r.slos],
        "profiles": r.profiles, "trials": r.result.trials, "evaluated": r.result.evaluated,
        "rejected": r.result.rejected, "meets_slo": bool(r.ranked),
        "no_plan_reason": None if r.ranked else why_nothing_meets(r),
        "ranked": [candidate_json(c) for c in r.ranked],
        "closest": [candidate_json(c) for c in r.result.closest],
        "launch_command": vllm_command(best.plan, r.model) if best else None,
        "simulated_finalists": r.simulated,
        "pareto": {name: [pareto_point_json(c) for c in front] for name, front in r.fronts.items()},
    }


def pareto_point_json(c: Candidate) -> dict:
    p = c.prediction
    return {"plan": plan_label(c), "max_num_seqs": c.plan.max_num_seqs,
            "max_num_batched_tokens": c.plan.max_num_batched_tokens,
            "tokens_per_s_per_gpu": p.tokens_per_s_per_gpu, "tpot_s": p.tpot_s,
            "tokens_per_s_per_user": 1.0 / p.tpot_s if p.tpot_s else None, "e2e_s": p.e2e_s,
            "cost_per_million_tokens": p.cost_per_million_tokens, "meets_slo": c.meets_slo,
            "simulated": p.simulation is not None}


def print_pareto(r: Recommendation, console: Console) -> None:
    """The two trade-off fronts, short: one line per non-dominated plan."""
    titles = {"throughput_vs_speed": ("Pareto: throughput per GPU vs per-user speed", "tok/s/GPU", "tok/s/user"),
              "cost_vs_latency": ("Pareto: cost vs latency", "$/M tok", "E2E ms")}
    for name, front in r.fronts.items():
        if len(front) < 2:
            continue
        title, xcol, ycol = titles[name]
        screened = any(c.prediction.simulation is None for c in front)
        t = Table(title=title, caption="means only: mean latencies against the limits; percentiles are checked only "
                  "for simulated plans" if screened else None)
        for col in ("plan", xcol, ycol, "SLO"):
            t.add_column(col, justify="left" if col == "plan" else "right")
        for c in front:
            p = c.prediction
            x, y = ((f"{p.tokens_per_s_per_gpu:,.0f}", f"{1 / p.tpot_s:,.1f}") if name == "throughput_vs_speed"
                    else (f"{p.cost_per_million_tokens:,.3f}", _ms(p.e2e_s)))
            # Unsimulated plans were only screened: means against the limits, percentiles not yet checked.
            # Scheduler settings tell apart the variants of one deployment along a front.
            label = f"{plan_label(c)} seqs {c.plan.max_num_seqs} budget {c.plan.max_num_batched_tokens}"
            t.add_row(label, x, y, ("met" if c.meets_slo else "missed")
                      + (" (simulated)" if p.simulation else " (means only)"))
        console.print(t)


def print_recommendation(r: Recommendation, console: Console) -> None:
    rows = r.ranked or r.result.closest
    if rows:
        print_candidates(r, rows, console)
    res = r.result
    console.print(f"[dim]{res.trials} trials, {res.evaluated} plans scored, rejected before scoring: "
                  + (", ".join(f"{k} {v}" for k, v in sorted(res.rejected.items())) or "none") + "[/]")
    print_pareto(r, console)
    if r.best:
        b = r.best
        console.print(f"\nBest: {plan_label(b)}, max_num_seqs {b.plan.max_num_seqs}, max_num_batched_tokens "
                      f"{b.plan.max_num_batched_tokens}, KV cache {b.prediction.memory.kv_capacity_tokens:,} tokens "
                      f"per replica")
        iv = b.prediction.interval or {}
        if "ttft_s" in iv and "tpot_s" in iv:
            console.print(f"Likely range: TTFT {_ms(iv['ttft_s'][0])}-{_ms(iv['ttft_s'][1])} ms, TPOT "
                          f"{_ms(iv['tpot_s'][0])}-{_ms(iv['tpot_s'][1])} ms")
        console.print("Launch with vLLM:")
        console.print(vllm_command(b.plan, r.model), markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(why_nothing_meets(r), markup=False)


def print_candidates(r: Recommendation, rows: list[Candidate], console: Console) -> None:
    """The ranked plans (or, when none meets the SLOs, the closest), with their notes."""
    slo_txt = ", ".join(s.label for s in r.slos) or "none"
    title = (f"{r.model.name}: {int(r.workload.input_tokens.mean)} in / {int(r.workload.output_tokens.mean)} out"
             + (f", {r.workload.rate_rps:g} req/s" if r.workload.rate_rps else "") + f"; SLO {slo_txt}")
    t = Table(title=title + ("" if r.ranked else "  (no plan meets the SLO: closest plans)"))
    for col in ("#", "plan", "TTFT ms", "TPOT ms", "tok/s/GPU", "$/M tok", "$/h", "batch", "bottleneck",
                "profile"):
        t.add_column(col, justify="right" if col not in ("plan", "bottleneck", "profile") else "left")
    pct_slos = [s for s in r.slos if s.percentile] if any(c.prediction.percentiles for c in rows) else []
    for s in pct_slos:
        t.add_column(f"{s.metric.upper()} p{s.percentile:g} ms", justify="right")
    if not r.ranked:
        t.add_column("misses", style="red")
    for i, c in enumerate(rows, 1):
        p = c.prediction
        row = [str(i), plan_label(c), _ms(p.ttft_s), _ms(p.tpot_s), f"{p.tokens_per_s_per_gpu:,.0f}",
               f"{p.cost_per_million_tokens:,.3f}", f"{p.cost_per_hour:,.2f}", f"{p.batch_size:.0f}",
               p.bottleneck, p.profile_kind]
        row += [_ms(metric_value(p, s)) for s in pct_slos]
        if not r.ranked:
            row.append(", ".join(f"{k} ({v:.2f}x)" for k, v in c.violations.items()))
        t.add_row(*row)
    console.print(t)
    if any(s.percentile for s in r.slos) and not r.workload.rate_rps:
        console.print("[yellow]note:[/] percentile SLOs are checked against predicted means "
                      "(the analytic model gives no percentiles; give --rate to simulate the finalists).")
    if r.simulated:
        sim = next((c.prediction.simulation for c in rows if c.prediction.simulation), None) or {}
        console.print(f"[dim]{r.simulated} finalists simulated ({sim.get('requests', '?')} requests each, one "
                      f"replica at rate / replicas); TTFT/TPOT columns are simulated means.[/]")
    basis = next((c.prediction.interval_basis for c in rows if c.prediction.interval_basis), None)
    if basis:
        console.print(f"[dim]Prediction intervals: {basis}.[/]")


def why_nothing_meets(r: Recommendation) -> str:
    """What eliminated the candidates: a limit before any was scored, or the binding SLO and the physical floor
    behind it."""
    if not r.result.closest:
        return f"No plan: {why_none_scored(r.result, r.workload.rate_rps)}."
    c = r.result.closest[0]
    where = f" in simulation at {r.workload.rate_rps:g} req/s" if r.simulated else ""
    lines = [f"No plan meets the SLO{where}; the binding constraint is {c.binding}."]
    for metric, slo_metric in (("ttft_s", "ttft"), ("tpot_s", "tpot")):
        f = r.result.fastest.get(metric)
        if f is not None and any(s.metric == slo_metric for s in r.slos):
            lines.append(f"The fastest {slo_metric.upper()} any searched plan reaches is "
                         f"{_ms(getattr(f.prediction, metric))} ms (mean, without queueing; {plan_label(f)}), bound by "
                         f"{f.prediction.bottleneck}.")
    lines.append("Relax the SLO, shorten the prompt, or allow more GPUs (--max-gpus) or faster GPUs (--gpus).")
    return "\n".join(lines)


def explanation_json(x: Explanation) -> dict:
    def ops(bd):
        return [{"op": o.name, "count": o.count, "flops": o.flops * o.count, "bytes": o.bytes * o.count,
                 "intensity_flop_per_byte": o.intensity, "bound": o.bound, "time_s": o.total_s,
                 "share": o.total_s / bd.total_s if bd.total_s else 0.0} for o in bd.ops]
    return {
        "model": x.model.name, "plan": x.plan.model_dump(mode="json"), "profile": x.profile_kind,
        "prefill_step": {"ops": ops(x.prefill), "time_s": x.prefill.total_s, "bottleneck": x.prefill.bottleneck},
        "decode_step": {"ops": ops(x.decode), "time_s": x.decode.total_s, "bottleneck": x.decode.bottleneck},
        "prefill_s": x.prefill_s, "decode_step_s": x.decode_step_s,
        "prediction": x.prediction.model_dump(mode="json"), "memory": x.memory.model_dump(mode="json"),
    }


def print_explanation(x: Explanation, console: Console) -> None:
    p = x.plan
    console.print(f"[bold]{x.model.name}[/] on {p.num_gpus}x {p.hardware} (TP{p.tp} PP{p.pp}, weights "
                  f"{p.weight_dtype}, KV {p.kv_dtype}), {x.profile_kind} profile")
    for title, bd in (("Prefill step (first chunk of the prompt)", x.prefill),
                      (f"Decode step at batch {int(x.workload.concurrency or 1)}", x.decode)):
        t = Table(title=f"{title}: {_ms(bd.total_s)} ms, {bd.bottleneck}-bound")
        for col in ("operator", "x", "GFLOP", "MB", "FLOP/B", "bound", "ms", "share"):
            t.add_column(col, justify="left" if col in ("operator", "bound") else "right")
        for o in bd.ops:
            t.add_row(o.name, str(o.count), f"{o.flops * o.count / 1e9:,.1f}", f"{o.bytes * o.count / 1e6:,.1f}",
                      f"{o.intensity:,.1f}" if math.isfinite(o.intensity) else "-", o.bound,
                      f"{o.total_s * 1e3:,.3f}", f"{o.total_s / bd.total_s:.1%}" if bd.total_s else "-")
        console.print(t)
    pr, m = x.prediction, x.memory
    console.print(f"Prefill of {int(x.workload.input_tokens.mean)} tokens: {_ms(x.prefill_s)} ms; decode step: "
                  f"{_ms(x.decode_step_s)} ms")
    if m.fits:                      # else no batch runs: the memory table and the shortfall below say why
        console.print(f"At batch {pr.batch_size:.0f}: TTFT {_ms(pr.ttft_s)} ms, TPOT {_ms(pr.tpot_s)} ms, "
                      f"E2E {_ms(pr.e2e_s)} ms, {pr.throughput_tok_s:,.0f} output tok/s "
                      f"({pr.tokens_per_s_per_gpu:,.0f}/GPU), ${pr.cost_per_million_tokens:,.3f} per M tokens")
        console.print("[dim]TPOT is the steady-state step: the batch's decodes plus the prompt chunks of the requests "
                      "that replace finished ones.[/]")
    else:
        console.print("No TTFT, TPOT or cost: the configuration does not fit in memory (below).")
    t = Table(title="Memory per GPU (GB)")
    for col in ("capacity", "usable", "weights", "activations", "runtime", "KV cache", "KV tokens",
                "max seqs"):
        t.add_column(col, justify="right")
    t.add_row(_gb(m.capacity_bytes), _gb(m.usable_bytes), _gb(m.weights_bytes), _gb(m.activation_bytes),
              _gb(m.runtime_overhead_bytes), _gb(m.kv_cache_bytes), f"{m.kv_capacity_tokens:,}",
              str(m.max_concurrent_seqs))
    console.print(t)
    if not m.fits:
        console.print(f"[red]Does not fit:[/] {_gb(m.shortfall_bytes)} GB per GPU missing for one sequence of "
                      f"{int(x.workload.input_tokens.mean + x.workload.output_tokens.mean)} tokens. "
                      "Use more GPUs (--tp), fp8/int4 weights, or a larger GPU.")


def comparison_json(cmp) -> dict:
    def row(w):
        doc = {"gpu": w.gpu, "meets_slo": w.ok, "profile": w.profile}
        if w.candidate is None:
            return {**doc, "reason": w.reason}
        return {**doc, "plan_label": plan_label(w.candidate), "gpus": w.gpus, "nodes": w.nodes,
                "cost_per_hour": w.cost_per_hour, "cost_per_million_tokens": w.cost_per_million_tokens,
                "tokens_per_s_per_gpu": w.tokens_per_s_per_gpu, "power_kw": w.power_kw, "headroom": w.headroom,
                "plan": w.candidate.plan.model_dump(mode="json"),
                "prediction": w.candidate.prediction.model_dump(mode="json")}
    return {"model": cmp.model, "rate_rps": cmp.rate_rps, "input_tokens": cmp.input_tokens,
            "output_tokens": cmp.output_tokens, "slos": [s.model_dump(mode="json") for s in cmp.slos],
            "rows": [row(w) for w in cmp.rows]}


def print_comparison(cmp, console: Console) -> None:
    slo_txt = ", ".join(s.label for s in cmp.slos) or "none"
    rate = f", {cmp.rate_rps:g} req/s" if cmp.rate_rps else ""
    t = Table(title=f"{cmp.model}: {int(cmp.input_tokens)} in / {int(cmp.output_tokens)} out{rate}; SLO {slo_txt}")
    for col in ("GPU", "best plan", "GPUs", "nodes", "$/h", "$/M tok", "tok/s/GPU", "kW"):
        t.add_column(col, justify="left" if col in ("GPU", "best plan") else "right")
    for s in cmp.slos:
        t.add_column(f"headroom {s.label}", justify="right")
    for w in cmp.rows:
        if w.candidate is None:
            t.add_row(w.gpu, f"[red]none: {w.reason}[/]", *[""] * (6 + len(cmp.slos)))
            continue
        head = [f"{w.headroom[s.label]:+.0%}" for s in cmp.slos]
        t.add_row(w.gpu, plan_label(w.candidate) if w.ok else f"[red]{plan_label(w.candidate)}[/]", str(w.gpus),
                  str(w.nodes), f"{w.cost_per_hour:,.2f}", f"{w.cost_per_million_tokens:,.3f}",
                  f"{w.tokens_per_s_per_gpu:,.0f}", f"{w.power_kw:,.1f}", *head)
    console.print(t)
    headroom = ("headroom = limit / predicted - 1 (percentile SLOs against simulated percentiles when a rate is "
                "given); " if cmp.slos else "")
    console.print(f"[dim]{headroom}kW = GPUs x TDP; nodes = GPUs / GPUs per node, rounded up.[/]")
