"""The bench report: predicted vs measured, latency distributions, throughput and concurrency over time,
a per-request timeline, failures and the run's manifest.

Input: the run document `plan bench run --json FILE --per-request` writes (backends/harness/bench.py), or
a `vllm bench serve --save-result --save-detailed` file. Every key is optional (see reports/README.md):
    metrics       {mean_ttft_ms, p99_itl_ms, output_throughput, completed, failed, duration, ...}
                  (vLLM's names; a vLLM result file, with these keys at the top level, works as is)
    vs_predicted  [{metric, predicted, measured}]  (also read: `comparison`, or `predicted` as
                  {metric name: value} under the metrics' names)
    samples       per-request rows, or vLLM's columns: see reports/requests.py
    errors        [{error, count}]  used when the rows carry no error text
    manifest      {...} free-form; without it, the document's other top-level fields (plan, config,
                  server, versions, gpu, git_rev, command, client...) are the manifest.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from reports import series
from reports.html import Page, Pct, figure, flatten, kv, note, table
from reports.requests import Req, load_requests
from reports.svg import HBars, Plot

LATENCIES = (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2E latency"))
STATS = ("mean", "median", "std", "p50", "p90", "p95", "p99")
SUMMARY = ("completed", "failed", "duration", "request_throughput", "output_throughput", "total_token_throughput",
           "request_goodput", "good_fraction", "max_concurrency", "request_rate", "total_input_tokens",
           "total_output_tokens", "concurrency_littles_law")
# Relative error beyond which a prediction is flagged (warn) or called wrong (bad).
WARN_ERROR, BAD_ERROR = 0.15, 0.50
# Not part of the manifest: the per-request detail and what other sections show.
_NOT_MANIFEST = {"ttfts", "itls", "input_lens", "output_lens", "errors", "start_times", "generated_texts",
                 "requests", "samples", "metrics", "predicted", "comparison", "vs_predicted", "predicted_vs_measured"}


def metrics_of(doc: dict) -> dict:
    """`metrics`, or the numeric top-level keys of a flat (vLLM-style) result file."""
    if isinstance(doc.get("metrics"), dict):
        return doc["metrics"]
    return {k: v for k, v in doc.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def comparisons(doc: dict, metrics: dict) -> list[tuple[str, float, float]]:
    """(metric, predicted, measured) pairs where both are numbers."""
    pairs = []
    comp = doc.get("vs_predicted") or doc.get("comparison") or doc.get("predicted_vs_measured")
    if isinstance(comp, dict):
        comp = [{"metric": k, **v} for k, v in comp.items() if isinstance(v, dict)]
    if isinstance(comp, list):
        pairs = [(c.get("metric"), c.get("predicted"), c.get("measured")) for c in comp if isinstance(c, dict)]
    elif isinstance(doc.get("predicted"), dict):
        pairs = [(k, v, metrics.get(k)) for k, v in doc["predicted"].items()]
    return [(str(k), float(p), float(m)) for k, p, m in pairs
            if isinstance(p, (int, float)) and isinstance(m, (int, float)) and not isinstance(p, bool)]


def _severity(err: float) -> str:
    return "bad" if abs(err) > BAD_ERROR else "warn" if abs(err) > WARN_ERROR else "ok"


def likely_ranges(doc: dict) -> dict[str, tuple[float, float]]:
    """metric -> the prediction's likely range, where the run's comparison rows carry one (`plan bench`)."""
    rows = doc.get("vs_predicted")
    return {r["metric"]: tuple(r["interval"]) for r in rows if isinstance(r, dict) and r.get("interval")
            and None not in r["interval"]} if isinstance(rows, list) else {}


def _prediction_section(pairs: list[tuple[str, float, float]], ranges: dict[str, tuple[float, float]]) -> str:
    if not pairs:
        return note("No prediction in the input (add `predicted` or `comparison`).")
    rows, classes, bars = [], [], []
    for name, pred, meas in pairs:
        err = (meas - pred) / pred if pred else float("nan")
        sev = _severity(err) if pred else "warn"
        lo, hi = ranges.get(name, (None, None))
        span = f"{lo:.4g}-{hi:.4g}" + ("" if lo <= meas <= hi else " (outside)") if lo is not None else "-"
        rows.append([name, pred, meas, meas - pred, Pct(err, signed=True) if pred else None, span])
        classes.append(["", "", "", "", sev, ""])
        if pred:
            bars.append((name, [(err * 100, sev, f"{name}: measured {meas:.4g} vs predicted {pred:.4g} "
                                                f"({err:+.1%})")]))
    chart = HBars("Prediction error per metric", "error, % of prediction ((measured − predicted) / predicted)", bars)
    chart.key("ok", f"within ±{WARN_ERROR:.0%}")
    chart.key("warn", f"within ±{BAD_ERROR:.0%}")
    chart.key("bad", f"beyond ±{BAD_ERROR:.0%}")
    return table(["metric", "predicted", "measured", "measured − predicted", "error", "likely range"], rows,
                 classes) + figure(chart)


def _stats_table(metrics: dict) -> str:
    rows = []
    for key, name in LATENCIES:
        vals = [metrics.get(f"{s}_{key}_ms") for s in STATS]
        if any(v is not None for v in vals):
            rows.append([name] + vals)
    if not rows:
        return note("No latency statistics in the input.")
    return table(["metric (ms)"] + list(STATS), rows)


def _cdf_section(reqs: list[Req]) -> str:
    ok = [r for r in reqs if r.ok]
    samples = {"ttft": [r.ttft_s * 1e3 for r in ok],
               "tpot": [r.tpot_s * 1e3 for r in ok if r.tpot_s is not None],
               "itl": [g * 1e3 for r in ok for g in r.itl_s],           # pooled, as metrics.md defines ITL
               "e2el": [r.e2el_s * 1e3 for r in ok if r.e2el_s is not None]}
    figs = []
    for i, (key, name) in enumerate(LATENCIES):
        pts = series.cdf(samples[key])
        if not pts:
            figs.append(note(f"{name}: no samples."))
            continue
        xs = [x for x, _ in pts]
        # A long tail (ITL stalls behind prefills) would squash a linear axis: switch to log.
        log = xs[0] > 0 and xs[-1] / max(xs[len(xs) // 2], 1e-9) > 20
        plot = Plot(f"{name} CDF", f"{name} (ms{', log scale' if log else ''})", "fraction of samples", xs, [0, 1],
                    x_log=log, width=480, height=280)
        plot.line(pts, i, step=True, title=f"{name}: {len(samples[key]):,} samples")
        figs.append(figure(plot, f"{len(samples[key]):,} samples"))
    return f'<div class="grid2">{"".join(figs)}</div>'


def _time_section(reqs: list[Req]) -> str:
    ts = series.over_time(reqs)
    if ts is None:
        return note("No request start times in the input: nothing to place on a time axis.")
    out = []
    for key, label, s in (("output_tok_s", "output tokens/s", 0), ("completed_rps", "completed requests/s", 2),
                          ("in_flight", "requests in flight", 1)):
        pts = ts[key]
        plot = Plot(label.capitalize() + " over time", "time since the first request (s)", label,
                    [x for x, _ in pts], [y for _, y in pts], y_zero=True, width=480, height=260)
        plot.line(pts, s, title=label)
        out.append(figure(plot))
    return f'<div class="grid2">{"".join(out)}</div>'


def _gantt_section(reqs: list[Req]) -> str:
    timed = [r for r in reqs if r.start_s is not None]
    if not timed:
        return note("No request start times in the input.")
    rows = series.sample(timed)
    ends = [r.start_s + (r.e2el_s or r.ttft_s or 0.0) for r in rows]
    plot = Plot("Request timeline", "time since the first request (s)", "request (in start order)",
                [r.start_s for r in rows] + ends, [0, len(rows)], height=max(260, min(900, 60 + 3 * len(rows))),
                y_fmt=lambda v: f"{v:.0f}")
    for i, r in enumerate(rows):
        y0, y1 = i + 0.1, i + 0.9
        if not r.ok:
            # A failure often has no duration: give it a visible width (0.5% of the axis).
            end = r.start_s + max(r.e2el_s or 0.0, (plot.x.hi - plot.x.lo) * 0.005)
            plot.rect(r.start_s, end, y0, y1, "bad", title=f"request {r.index} failed: {r.error}")
            continue
        first = r.start_s + r.ttft_s
        plot.rect(r.start_s, first, y0, y1, 1, title=f"request {r.index}: TTFT {r.ttft_s * 1e3:.1f} ms")
        if r.e2el_s is not None and r.e2el_s > r.ttft_s:
            plot.rect(first, r.start_s + r.e2el_s, y0, y1, 0,
                      title=f"request {r.index}: decode {(r.e2el_s - r.ttft_s) * 1e3:.1f} ms, "
                            f"{r.output_tokens or '?'} tokens")
    plot.key(1, "waiting for the first token (TTFT)")
    plot.key(0, "decoding")
    plot.key("bad", "failed")
    shown = f"{len(rows):,} of {len(timed):,} requests shown, evenly sampled" if len(rows) < len(timed) \
        else f"all {len(rows):,} requests"
    return figure(plot, shown + "; hover a bar for its numbers.")


def _failures_section(reqs: list[Req], metrics: dict, doc: dict) -> str:
    failed = [r for r in reqs if not r.ok]
    if not failed:
        counted = [e for e in doc.get("errors") or [] if isinstance(e, dict)]
        if counted:                     # the harness's summary: [{error, count}]
            return table(["error", "count"], [[e.get("error"), e.get("count")] for e in counted[:50]])
        n = metrics.get("failed")
        return note(f"{n} requests failed; the input carries no per-request errors." if n else "No failures.")
    groups: dict[str, list[int]] = defaultdict(list)
    for r in failed:
        groups[r.error or "unknown error"].append(r.index)
    rows = [[err, len(idx), ", ".join(map(str, idx[:10])) + (" …" if len(idx) > 10 else "")]
            for err, idx in sorted(groups.items(), key=lambda kv_: -len(kv_[1]))[:50]]
    return note(f"{len(failed):,} of {len(reqs):,} requests failed ({len(groups)} distinct errors).") + \
        table(["error", "count", "requests"], rows)


def _manifest(doc: dict, metrics: dict) -> dict:
    if isinstance(doc.get("manifest"), dict):
        return doc["manifest"]
    # The harness's run document (plan, config, server, versions...) or a flat vLLM result file (date,
    # backend, model_id...): everything that is not a metric or shown elsewhere describes the run.
    return {k: v for k, v in doc.items() if k not in metrics and k not in _NOT_MANIFEST
            and not (isinstance(v, list) and len(v) > 20) and v not in (None, "", [], {})}


def build(doc: dict) -> Page:
    metrics = metrics_of(doc)
    manifest = _manifest(doc, metrics)
    reqs = load_requests(doc)
    plan = manifest.get("plan") if isinstance(manifest.get("plan"), dict) else {}
    title = manifest.get("model") or plan.get("model") or manifest.get("model_id") or "benchmark"
    sub = " · ".join(str(manifest[k]) for k in ("backend", "gpu", "tag", "status", "created_at", "date")
                     if manifest.get(k) and not isinstance(manifest[k], (dict, list)))
    page = Page(f"Benchmark: {title}", sub)
    summary = [(k, metrics[k]) for k in SUMMARY if k in metrics]
    page.section("Summary", kv(summary) if summary else note("No run metrics in the input."))
    page.section("Predicted vs measured", _prediction_section(comparisons(doc, metrics), likely_ranges(doc)))
    page.section("Latency statistics", _stats_table(metrics))
    if reqs:
        page.section("Latency distributions", _cdf_section(reqs))
        page.section("Throughput and concurrency over time", _time_section(reqs))
        page.section("Request timeline", _gantt_section(reqs))
    else:
        page.section("Per-request detail", note("The input has no per-request detail: distributions, time series "
                                                "and the timeline are omitted."))
    page.section("Failures", _failures_section(reqs, metrics, doc))
    page.section("Run manifest", kv(flatten(manifest)) if manifest else note("No manifest in the input."))
    return page


def write(doc: dict, path: str | Path) -> Path:
    # Embed the summary only: per-request detail of a long run would make the file huge.
    data = {"manifest": _manifest(doc, metrics_of(doc)), "metrics": metrics_of(doc),
            "comparison": [{"metric": m, "predicted": p, "measured": v} for m, p, v in comparisons(doc, metrics_of(doc))]}
    return build(doc).write(path, data=data)
