"""Run metrics from request records, exactly as docs/reference metrics.md defines them.

Plain names follow `vllm bench serve`; other tools' variants carry their own explicit names.
Latency statistics are in milliseconds; a statistic with no samples is None, never 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from backends.harness.record import RequestRecord
from backends.harness.tokenizer import Tokenizer

PERCENTILES = (50, 90, 95, 99)
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")
VARIANT_METRICS = ("ttft_content", "tpot_incl_first", "itl_req_avg")
GOODPUT_METRICS = ("ttft", "tpot", "e2el")


@dataclass(slots=True)
class RequestMetrics:
    """One request's derived numbers, seconds; None where not defined."""
    ok: bool
    ttft_s: float | None
    e2el_s: float | None
    itl_s: list[float]
    tpot_s: float | None
    ttft_content_s: float | None
    output_tokens: int
    output_tokens_source: str      # usage | retokenized | assumed_1
    prompt_tokens: int             # as the client counted them (what vLLM sums)
    server_prompt_tokens: int | None   # usage.prompt_tokens, to report drift


def request_metrics(rec: RequestRecord, tokenizer: Tokenizer | None = None) -> RequestMetrics:
    if not rec.ok:
        return RequestMetrics(False, None, None, [], None, None, 0, "none", rec.prompt_len, rec.usage_prompt_tokens)
    times = rec.token_times
    ttft = times[0] - rec.t_start
    e2el = times[-1] - rec.t_start
    if rec.usage_completion_tokens is not None:
        n_out, source = rec.usage_completion_tokens, "usage"
    elif tokenizer is not None:
        n_out, source = tokenizer.count("".join(rec.text_parts)), "retokenized"
    else:
        n_out, source = 1, "assumed_1"
    tpot = (e2el - ttft) / (n_out - 1) if n_out > 1 else None
    itl = [b - a for a, b in pairwise(times)]
    first_content = rec.t_first_content - rec.t_start if rec.t_first_content is not None else None
    return RequestMetrics(True, ttft, e2el, itl, tpot, first_content, n_out, source, rec.prompt_len,
                          rec.usage_prompt_tokens)


def _stats_ms(name: str, samples_s: list[float]) -> dict[str, float | None]:
    if not samples_s:
        keys = ["mean", "median", "std"] + [f"p{p}" for p in PERCENTILES]
        return {f"{k}_{name}_ms": None for k in keys}
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    out = {f"mean_{name}_ms": float(ms.mean()), f"median_{name}_ms": float(np.median(ms)),
           f"std_{name}_ms": float(ms.std(ddof=0))}
    for p, v in zip(PERCENTILES, np.percentile(ms, PERCENTILES)):   # linear interpolation, NumPy's default
        out[f"p{p}_{name}_ms"] = float(v)
    return out


def is_good(m: RequestMetrics, slos_ms: dict[str, float]) -> bool:
    """Meets every per-request SLO (ttft, tpot, e2el in ms); a request without a TPOT (one output
    token) meets any TPOT limit, as in vLLM."""
    if not m.ok:
        return False
    values = {"ttft": m.ttft_s, "tpot": m.tpot_s or 0.0, "e2el": m.e2el_s}
    return all(values[k] * 1e3 <= limit for k, limit in slos_ms.items())


def compute_metrics(records: list[RequestRecord], duration_s: float, *, goodput_slos_ms: dict[str, float] | None = None,
                    tokenizer: Tokenizer | None = None) -> tuple[dict, list[RequestMetrics]]:
    """Run-level metrics (flat dict with vLLM's key names) and the per-request metrics behind them."""
    per = [request_metrics(r, tokenizer) for r in records]
    good = [m for m in per if m.ok]
    completed, failed = len(good), len(per) - len(good)
    total_in = sum(m.prompt_tokens for m in good)
    total_out = sum(m.output_tokens for m in good)
    rate = (lambda x: x / duration_s) if duration_s > 0 else (lambda x: 0.0)
    sources: dict[str, int] = {}
    for m in good:
        sources[m.output_tokens_source] = sources.get(m.output_tokens_source, 0) + 1
    out: dict = {
        "completed": completed, "failed": failed, "duration": duration_s,
        "total_input_tokens": total_in, "total_output_tokens": total_out,
        "request_throughput": rate(completed), "output_throughput": rate(total_out),
        "total_token_throughput": rate(total_in + total_out),
        "output_tokens_source": sources,
    }
    samples = {
        "ttft": [m.ttft_s for m in good],
        "tpot": [m.tpot_s for m in good if m.tpot_s is not None],
        "itl": [g for m in good for g in m.itl_s],     # pooled over all successful requests
        "e2el": [m.e2el_s for m in good],
        "ttft_content": [m.ttft_content_s for m in good if m.ttft_content_s is not None],
        "tpot_incl_first": [m.e2el_s / m.output_tokens for m in good if m.output_tokens > 0],
        "itl_req_avg": [sum(m.itl_s) / len(m.itl_s) for m in good if m.itl_s],
    }
    for name in LATENCY_METRICS + VARIANT_METRICS:
        out.update(_stats_ms(name, samples[name]))
    out["concurrency_littles_law"] = rate(sum(samples["e2el"]))
    drift = [m.server_prompt_tokens - m.prompt_tokens for m in good if m.server_prompt_tokens is not None]
    # metrics.md trap: text prompts drift after re-tokenization; report what the server counted.
    out["prompt_tokens_drift_mean"] = sum(drift) / len(drift) if drift else None
    out["prompt_tokens_drift_max_abs"] = max(map(abs, drift)) if drift else None
    if goodput_slos_ms:
        n_good = sum(is_good(m, goodput_slos_ms) for m in per)
        out["request_goodput"] = rate(n_good)
        out["good_fraction"] = n_good / len(per) if per else 0.0
        out["goodput_slos_ms"] = dict(goodput_slos_ms)
    return out, per
