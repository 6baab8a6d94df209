"""Checks of measured metrics against SLOs (parsed by planner.parse.parse_slo, the one grammar of every
command: "ttft_p99<=200ms", "tpot=50ms", "e2e_p90<=2s")."""
from __future__ import annotations

import numpy as np

from planner.errors import UsageError
from planner.schemas import SLO

_METRIC_KEY = {"ttft": "ttft", "tpot": "tpot", "itl": "itl", "e2e": "e2el"}


def metric_key(slo: SLO) -> str:
    """The metrics.py key an SLO reads: mean when no percentile is given."""
    stat = f"p{slo.percentile:g}" if slo.percentile else "mean"
    return f"{stat}_{_METRIC_KEY[slo.metric]}_ms"


def slo_value_ms(slo: SLO, metrics: dict, per_request: dict[str, list[float]] | None = None) -> float | None:
    """The measured value for an SLO; percentiles the run did not report are computed from samples."""
    key = metric_key(slo)
    if key in metrics:
        return metrics[key]
    if per_request:
        samples = per_request.get(_METRIC_KEY[slo.metric]) or []
        return float(np.percentile(samples, slo.percentile)) if samples else None
    return None


def goodput_limits_ms(slos: list[SLO]) -> dict[str, float]:
    """Per-request limits for goodput (metrics.md: TTFT, TPOT, E2EL); percentiles do not apply per request."""
    limits = {}
    for slo in slos:
        if slo.metric == "itl":
            raise UsageError("goodput takes ttft, tpot and e2e limits; itl has no per-request value")
        limits[_METRIC_KEY[slo.metric]] = slo.limit_s * 1e3
    return limits


def unmet(slos: list[SLO], metrics: dict, per_request: dict[str, list[float]] | None = None) -> list[str]:
    """Labels of the SLOs the metrics miss (a missing value counts as missed)."""
    missed = []
    for slo in slos:
        value = slo_value_ms(slo, metrics, per_request)
        if value is None or value > slo.limit_s * 1e3:
            missed.append(f"{slo.label} (measured {'n/a' if value is None else f'{value:.1f}ms'})")
    return missed
