"""The recommend report: ranked plans, Pareto fronts, the chosen plan's roofline, memory, launch command.

Input: the document `plan recommend --json` prints (planner.render.recommendation_json). Keys used:
model, objective, workload, slos, profiles, trials, evaluated, rejected, meets_slo, ranked, closest,
launch_command; each candidate is {plan, prediction, meets_slo, violations}. Missing keys are skipped.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from planner.errors import PlanError
from reports.html import Page, Pct, badge, figure, kv, note, pre, slo_label, table
from reports.roofline import Roofline, roofline
from reports.svg import HBars, Plot

RooflineFn = Callable[[dict, float, float, float, str], Roofline]


def _label(c: dict) -> str:
    p = c.get("plan", {})
    par = f"TP{p.get('tp', 1)}" + (f"·PP{p['pp']}" if p.get("pp", 1) > 1 else "")
    reps = f" ×{p['replicas']}" if p.get("replicas", 1) > 1 else ""
    return f"{p.get('num_gpus', '?')}× {p.get('hardware', '?')} {par}{reps} {p.get('weight_dtype', '')}"


def _ms(s: float | None) -> float | None:
    return None if s is None else s * 1e3


def _plans_table(cands: list[dict], with_misses: bool) -> str:
    headers = ["#", "plan", "GPUs", "TTFT ms", "TPOT ms", "E2E s", "tok/s/GPU", "$/M tok", "$/h", "batch",
               "KV tokens", "bottleneck", "profile"] + (["misses (x over limit)"] if with_misses else [])
    rows = []
    for i, c in enumerate(cands, 1):
        p, pr = c.get("plan", {}), c.get("prediction", {})
        row = [i, _label(c), p.get("num_gpus"), _ms(pr.get("ttft_s")), _ms(pr.get("tpot_s")), pr.get("e2e_s"),
               pr.get("tokens_per_s_per_gpu"), pr.get("cost_per_million_tokens"), pr.get("cost_per_hour"),
               pr.get("batch_size"), pr.get("memory", {}).get("kv_capacity_tokens"), pr.get("bottleneck"),
               pr.get("profile_kind")]
        if with_misses:
            row.append(", ".join(f"{k} {v:.2f}x" for k, v in (c.get("violations") or {}).items()) or "–")
        rows.append(row)
    return table(headers, rows)


def pareto_front(points: list[tuple[float, float]], minimize_x: bool, minimize_y: bool) -> list[int]:
    """Indexes of the non-dominated points, ordered by x."""
    sx, sy = (1 if minimize_x else -1), (1 if minimize_y else -1)
    order = sorted(range(len(points)), key=lambda i: (sx * points[i][0], sy * points[i][1]))
    front, best_y = [], math.inf
    for i in order:
        y = sy * points[i][1]
        if y < best_y:
            front.append(i)
            best_y = y
    return sorted(front, key=lambda i: points[i][0])


def trade_off_points(doc: dict, cands: list[dict]) -> list[dict]:
    """Every plan with a prediction: the ranked and closest candidates, plus the planner's own Pareto
    fronts (`pareto`) when the document has them, without duplicates."""
    pts = []
    for i, c in enumerate(cands):
        p = c.get("prediction", {})
        pts.append({"label": _label(c), "tpot_s": p.get("tpot_s"), "e2e_s": p.get("e2e_s"),
                    "cost": p.get("cost_per_million_tokens"), "tps_gpu": p.get("tokens_per_s_per_gpu"),
                    "meets_slo": c.get("meets_slo"), "best": i == 0 and bool(doc.get("ranked"))})
    for front in (doc.get("pareto") or {}).values():
        for q in front if isinstance(front, list) else []:
            pts.append({"label": q.get("plan"), "tpot_s": q.get("tpot_s"), "e2e_s": q.get("e2e_s"),
                        "cost": q.get("cost_per_million_tokens"), "tps_gpu": q.get("tokens_per_s_per_gpu"),
                        "meets_slo": q.get("meets_slo"), "best": False})
    seen, out = set(), []
    for q in pts:
        key = tuple(round(q[k], 9) if isinstance(q[k], float) else q[k] for k in ("tpot_s", "e2e_s", "cost", "tps_gpu"))
        if key not in seen:
            seen.add(key)
            out.append(q)
    return out


def _pareto_chart(points: list[dict], title: str, x_label: str, y_label: str, xy: Callable[[dict], tuple],
                  minimize: tuple[bool, bool], x_limit: float | None, limit_label: str) -> Plot | None:
    pts, keep = [], []
    for q in points:
        x, y = xy(q)
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0:
            pts.append((x, y))
            keep.append(q)
    if not pts:
        return None
    xs = [x for x, _ in pts] + ([x_limit] if x_limit else [])
    # Half-width charts: a smaller canvas keeps their text the size of the full-width ones.
    plot = Plot(title, x_label, y_label, xs, [y for _, y in pts], y_zero=True, pad=0.06, width=480, height=320)
    front = pareto_front(pts, *minimize)
    plot.line([pts[i] for i in front], 0, "Pareto front")
    tips = [f"{q['label']}: x {x:.4g}, y {y:.4g}" for q, (x, y) in zip(keep, pts)]
    for cls, label, want in (("ok", "meets the SLO", True), ("bad", "misses the SLO", False)):
        idx = [i for i, q in enumerate(keep) if bool(q.get("meets_slo")) == want]
        plot.points([pts[i] for i in idx], cls, label, titles=[tips[i] for i in idx])
    best = [i for i, q in enumerate(keep) if q["best"]]
    plot.points([pts[i] for i in best], 1, "recommended", titles=[tips[i] for i in best], r=6, square=True)
    if x_limit:
        plot.line([(x_limit, plot.y.lo), (x_limit, plot.y.hi)], "warn", limit_label, dashed=True)
    return plot


def _pareto_section(doc: dict, cands: list[dict]) -> str:
    limits = {s.get("metric"): s["limit_s"] for s in doc.get("slos", []) if not s.get("percentile")}
    points = trade_off_points(doc, cands)
    cost = _pareto_chart(points, "Cost vs latency", "E2E latency per request (s)", "$ per M output tokens",
                         lambda q: (q["e2e_s"], q["cost"]), (True, True), limits.get("e2e"), "E2E SLO")
    speed = _pareto_chart(points, "Throughput per GPU vs per-user speed", "per-user speed (output tok/s = 1 / TPOT)",
                          "output tok/s per GPU", lambda q: (1 / q["tpot_s"] if q["tpot_s"] else None, q["tps_gpu"]),
                          (False, False), 1 / limits["tpot"] if limits.get("tpot") else None, "TPOT SLO")
    figs = [figure(c, "Lower-left is better; the line joins plans no other plan beats on both axes.")
            for c in (cost,) if c] + [figure(c, "Upper-right is better.") for c in (speed,) if c]
    extra = note(f"{len(points)} plans: the ranked and closest candidates"
                 + (" and the planner's Pareto fronts." if doc.get("pareto") else
                    ". `plan recommend --top 20` gives a fuller front."))
    return f'<div class="grid2">{"".join(figs)}</div>{extra}' if figs else note("No candidates with predictions.")


def _roofline_section(r: Roofline, label: str) -> str:
    xs = [p.intensity for p in r.points] + [r.ridge, r.derated_flops / r.derated_bandwidth]
    lo, hi = min(xs) / 3, max(xs) * 3
    ys = [p.flops_per_s for p in r.points] + [r.peak_flops * 1.3, r.ceiling(lo, derated=True)]
    plot = Plot(f"Roofline of {label}", "arithmetic intensity (FLOP/byte)", "attained FLOP/s per GPU", [lo, hi], ys,
                x_log=True, y_log=True, height=380)
    for derated, series, name in ((False, 7, "datasheet ceiling"), (True, 3, f"{r.profile_kind} ceiling (derated)")):
        knee = (r.derated_flops / r.derated_bandwidth) if derated else r.ridge
        xs_c = [lo] + ([knee] if lo < knee < hi else []) + [hi]
        plot.line([(x, r.ceiling(x, derated)) for x in xs_c], series, name, dashed=derated)
    if r.attention_flops < r.peak_flops:
        plot.line([(lo, r.attention_flops), (hi, r.attention_flops)], 4, "bf16 peak (attention runs in bf16)",
                  dashed=True)
    for phase, series, square in (("prefill", 0, False), ("decode", 1, True)):
        pts = [p for p in r.points if p.phase == phase]
        plot.points([(p.intensity, p.flops_per_s) for p in pts], series, f"{phase} operators", square=square,
                    titles=[f"{p.op} ({phase}): {p.intensity:.3g} FLOP/B, {p.flops_per_s / 1e12:.3g} TFLOP/s, "
                            f"{p.bound}-bound, {p.share:.1%} of the step" for p in pts])
    rows = [[p.phase, p.op, p.intensity, p.flops_per_s / 1e12, Pct(p.flops_per_s / r.ceiling(p.intensity, True)),
             p.bound, Pct(p.share)] for p in r.points]
    caption = (f"{r.gpu}, {r.compute_dtype} GEMMs, decode at batch {r.batch}; ceilings: datasheet "
               f"{r.peak_flops / 1e12:,.0f} TFLOP/s and {r.bandwidth / 1e12:.2f} TB/s, derated "
               f"{r.derated_flops / 1e12:,.0f} TFLOP/s and {r.derated_bandwidth / 1e12:.2f} TB/s "
               f"({r.profile_kind} profile efficiencies).")
    skipped = note("Not on the chart (they move bytes but do no FLOPs): " + ", ".join(r.no_flops) + ".") \
        if r.no_flops else ""
    return figure(plot, caption) + skipped + table(
        ["phase", "operator", "FLOP/byte", "TFLOP/s", "of derated roof", "bound", "share of step"], rows)


def _memory_section(cands: list[dict]) -> str:
    parts = (("weights_bytes", 0, "weights"), ("activation_bytes", 1, "activations"),
             ("runtime_overhead_bytes", 4, "runtime (CUDA context, NCCL, graphs)"), ("kv_cache_bytes", 2, "KV cache"))
    rows = []
    for c in cands:
        m = c.get("prediction", {}).get("memory")
        if not m:
            continue
        segs = [(m.get(k, 0.0) / 1e9, s, f"{name}: {m.get(k, 0.0) / 1e9:,.1f} GB") for k, s, name in parts]
        reserve = m.get("capacity_bytes", 0.0) - m.get("usable_bytes", 0.0)
        segs.append((reserve / 1e9, "muted", f"left unused (gpu_memory_utilization): {reserve / 1e9:,.1f} GB"))
        rows.append((f"#{len(rows) + 1} {_label(c)}", segs))
    if not rows:
        return note("No memory breakdown in the input.")
    chart = HBars("Memory per GPU", "GB per GPU", rows)
    for _, s, name in parts:
        chart.key(s, name)
    chart.key("muted", "left unused")
    return figure(chart, "Per GPU of each plan; a negative KV-cache segment is memory the plan is short of.")


def build(doc: dict, roofline_fn: RooflineFn = roofline) -> Page:
    ranked, closest = doc.get("ranked") or [], doc.get("closest") or []
    wl = doc.get("workload") or {}
    inp = (wl.get("input_tokens") or {}).get("mean", 1024)
    out = (wl.get("output_tokens") or {}).get("mean", 256)
    slo_txt = ", ".join(slo_label(s) for s in doc.get("slos", [])) or "none"
    page = Page(f"Deployment plan: {doc.get('model', 'unknown model')}",
                f"{inp:g} input / {out:g} output tokens"
                + (f", {wl['rate_rps']:g} req/s" if wl.get("rate_rps") else "")
                + f" · SLO {slo_txt} · objective {doc.get('objective', '?')}")
    verdict = badge("meets the SLO", "ok") if ranked else badge("no plan meets the SLO", "bad")
    summary = kv([("trials", doc.get("trials")), ("plans scored", doc.get("evaluated")),
                  ("rejected before scoring", ", ".join(f"{k} {v}" for k, v in (doc.get("rejected") or {}).items())
                   or "none"),
                  ("hardware profiles", ", ".join(sorted(set((doc.get("profiles") or {}).values()))) or "–")])
    page.section("Summary", f"<p>{verdict}</p>", summary)
    if ranked:
        page.section("Ranked plans", _plans_table(ranked, with_misses=False))
    if closest:
        page.section("Closest plans (missing the SLO)", _plans_table(closest, with_misses=True))
    if not ranked and not closest:
        page.section("Plans", note("The input has no ranked or closest plans."))
    cands = ranked + [c for c in closest if c not in ranked]
    page.section("Pareto front", _pareto_section(doc, cands))
    chosen = (ranked or closest or [None])[0]
    if chosen and chosen.get("plan"):
        # Reproduce the profile the search used: a datasheet run must not pick up a measured profile since.
        kind = (doc.get("profiles") or {}).get(chosen["plan"].get("hardware"))
        try:
            r = roofline_fn(chosen["plan"], inp, out, chosen.get("prediction", {}).get("batch_size", 1),
                            "datasheet" if kind == "datasheet" else "auto")
            body = _roofline_section(r, _label(chosen))
        except (PlanError, ValidationError, KeyError, ValueError, OSError) as e:
            body = note(f"Roofline unavailable: {e}")
        heading = "Roofline of the recommended plan" if ranked else "Roofline of the closest plan"
        page.section(heading, body)
    page.section("Memory breakdown", _memory_section(cands))
    cmd = doc.get("launch_command")
    page.section("Launch command", pre(cmd) if cmd else note("No launch command: no plan meets the SLO."))
    return page


def write(doc: dict, path: str | Path) -> Path:
    return build(doc).write(path, data=doc)
