"""Parsers for command-line values. Every failure is a UsageError naming the accepted forms."""
from __future__ import annotations

import math
import re

from planner.errors import UsageError
from planner.schemas import SLO

SLO_FORMS = ("ttft=200ms", "tpot=30ms", "itl=50ms", "e2e=5s", "ttft_p99=500ms", "tpot_p90=40ms")
_SLO_RE = re.compile(r"^(ttft|tpot|itl|e2e)(?:_p(\d+(?:\.\d+)?))?=(.+)$")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(?:e([+-]?\d+))?\s*(us|µs|ms|s)?$")
_UNIT_S = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, None: 1e-3}


def parse_duration_s(text: str) -> float:
    """'200ms', '0.2s', '150us', or a bare number of milliseconds -> seconds (> 0)."""
    m = _DURATION_RE.match(text.strip().lower())
    if not m:
        raise UsageError(f"malformed duration {text!r}: use a positive number with a unit, e.g. 200ms, 1.5s, 800us")
    value = float(m.group(1)) * (10 ** int(m.group(2)) if m.group(2) else 1)
    seconds = value * _UNIT_S[m.group(3)]
    if not (seconds > 0 and math.isfinite(seconds)):
        raise UsageError(f"duration {text!r} must be positive and finite, e.g. 200ms")
    return seconds


def parse_slo(text: str) -> SLO:
    """'ttft=200ms' (mean) or 'ttft_p99=500ms' (percentile) -> SLO."""
    m = _SLO_RE.match(text.strip().lower().replace(" ", ""))
    if not m:
        raise UsageError(f"malformed SLO {text!r}: accepted forms are METRIC=DURATION or METRIC_pNN=DURATION "
                         f"with METRIC in ttft, tpot, itl, e2e, e.g. {', '.join(SLO_FORMS)}")
    metric, pct, value = m.groups()
    percentile = float(pct) if pct else None
    if percentile is not None and not 0 < percentile <= 100:
        raise UsageError(f"SLO percentile in {text!r} must be in (0, 100], e.g. ttft_p99=500ms")
    try:
        limit = parse_duration_s(value)
    except UsageError:
        raise UsageError(f"malformed SLO {text!r}: the limit must be a positive duration; accepted forms are "
                         f"METRIC=DURATION or METRIC_pNN=DURATION, e.g. {', '.join(SLO_FORMS)}") from None
    return SLO(metric=metric, limit_s=limit, percentile=percentile)


def parse_list(text: str | None) -> list[str]:
    """'h100,h200, a100' -> ['h100', 'h200', 'a100']."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def parse_positive_int(text: str, what: str) -> int:
    try:
        v = int(text)
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be a positive integer, got {text!r}") from None
    if v <= 0:
        raise UsageError(f"{what} must be a positive integer, got {text!r}")
    return v
