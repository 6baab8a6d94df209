"""Was the client, not the server, the bottleneck? Offered vs achieved rate and the client's own lags.

Reported with every run (metrics.md: measure the client and say when it limited the result).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from backends.harness.runner import LoadConfig, LoadResult


@dataclass
class ClientThresholds:
    dispatch_lag_p99_ms: float = 5.0     # sends later than scheduled: the offered load was not offered
    loop_lag_p99_ms: float = 10.0        # every time stamp can be this late
    cpu_fraction: float = 0.90           # a single-threaded client near one full core is saturated
    dispatch_rate_fraction: float = 0.95  # sent / scheduled rate


def _pct_ms(values_s: list[float], p: float) -> float | None:
    return float(np.percentile(values_s, p) * 1e3) if values_s else None


def client_report(result: LoadResult, cfg: LoadConfig, completed: int,
                  thresholds: ClientThresholds | None = None) -> dict:
    th = thresholds or ClientThresholds()
    recs = result.records
    finite = not math.isinf(cfg.rate_rps)
    sent = [r for r in recs if r.t_start]
    lags = [r.t_dispatch - r.t_scheduled for r in recs] if finite else []
    queue = [r.t_start - r.t_dispatch for r in sent]
    span_s = max((r.t_scheduled for r in recs), default=result.t0) - result.t0
    send_span_s = max((r.t_start for r in sent), default=result.t0) - result.t0
    errors = [t - s for r in recs if r.ok for t, s in zip(r.token_times, r.server_send_times)]
    report = {
        "offered_rate_rps": cfg.rate_rps if finite else None,
        # The run's time origin (samples' t_start_s count from it) on the host's monotonic clock, which an
        # engine trace on the same host shares (its kv_cache event's clock_origin_s).
        "clock_origin_s": result.t0,
        "scheduled_rate_rps": (len(recs) - 1) / span_s if finite and span_s > 0 else None,
        "dispatch_rate_rps": (len(sent) - 1) / send_span_s if send_span_s > 0 else None,
        "achieved_rate_rps": completed / result.duration_s if result.duration_s > 0 else 0.0,
        "max_concurrency": cfg.max_concurrency,
        "p50_dispatch_lag_ms": _pct_ms(lags, 50), "p99_dispatch_lag_ms": _pct_ms(lags, 99),
        "mean_client_queue_time_ms": float(np.mean(queue) * 1e3) if queue else None,
        "p99_client_queue_time_ms": _pct_ms(queue, 99),
        "p99_loop_lag_ms": _pct_ms(result.loop_lag_s, 99),
        "max_loop_lag_ms": max(result.loop_lag_s) * 1e3 if result.loop_lag_s else None,
        "client_cpu_fraction": result.client_cpu_fraction,
        # Another busy process on the host starves the client without raising its CPU fraction:
        # high loop lag with a low CPU fraction and a load above the CPU count reads as contention.
        "host_load_1m": os.getloadavg()[0], "host_cpus": os.cpu_count(),
        # Only against the no-op server, whose token messages carry their send time.
        "p50_timing_error_ms": _pct_ms(errors, 50), "p99_timing_error_ms": _pct_ms(errors, 99),
    }
    reasons = []
    if report["p99_dispatch_lag_ms"] is not None and report["p99_dispatch_lag_ms"] > th.dispatch_lag_p99_ms:
        reasons.append(f"dispatch lag p99 {report['p99_dispatch_lag_ms']:.1f} ms > {th.dispatch_lag_p99_ms:g} ms")
    if report["p99_loop_lag_ms"] is not None and report["p99_loop_lag_ms"] > th.loop_lag_p99_ms:
        reasons.append(f"event-loop lag p99 {report['p99_loop_lag_ms']:.1f} ms > {th.loop_lag_p99_ms:g} ms")
    if result.client_cpu_fraction > th.cpu_fraction:
        reasons.append(f"client CPU {result.client_cpu_fraction:.0%} of a core > {th.cpu_fraction:.0%}")
    # Against the realised schedule, not the nominal rate: a short Poisson run is rarely exactly on rate.
    scheduled = report["scheduled_rate_rps"]
    if scheduled and report["dispatch_rate_rps"] and report["dispatch_rate_rps"] < th.dispatch_rate_fraction * scheduled:
        reasons.append(f"sent {report['dispatch_rate_rps']:.0f} req/s of {scheduled:.0f} scheduled")
    report["client_bound"] = bool(reasons)
    report["client_bound_reasons"] = reasons
    return report
