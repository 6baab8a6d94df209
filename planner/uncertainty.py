"""Prediction intervals: how far the real figure may be from the predicted one.

A hardware profile may carry calibration residuals, written by a fidelity check that compared predictions
with measurements on that GPU:

    measured:
      residuals:                      # relative errors, measured / predicted - 1, one per held-out run
        ttft: [-0.08, 0.03, ...]
        tpot: [...]
        e2e: [...]
        throughput: [...]

A metric with at least MIN_RESIDUALS of them gets the empirical 5th..95th percentile band of its residuals.
Otherwise a stated default band applies: +-15% for datasheet profiles (efficiencies are defaults, not
measurements), +-7% for measured or calibrated ones. The basis is recorded with the prediction.

Under load a fixed relative band understates the doubt: queueing magnifies an error in step time (at 90%
utilisation a 3% slower engine adds tens of percent to TTFT; at 100% the queue grows without bound). So a
simulated prediction's latencies also get the band that the simulator gives when every step takes
(1 + lo) and (1 + hi) times as long, lo..hi being the step-time band (`step` residuals, else the default),
and its interval is the union of the two. A high end of infinity means the engine that slow saturates.
"""
from __future__ import annotations

import numpy as np

from planner.schemas import HardwareProfile, Prediction

DEFAULT_BAND = {"datasheet": 0.15, "measured": 0.07, "calibrated": 0.07}
MIN_RESIDUALS = 5
BAND_PERCENTILES = (5, 95)
# Prediction field -> residual key. Latency percentiles share their metric's residuals.
FIELDS = {"ttft_s": "ttft", "tpot_s": "tpot", "e2e_s": "e2e", "throughput_tok_s": "throughput",
          "tokens_per_s_per_gpu": "throughput"}


def relative_band(hw: HardwareProfile, metric: str) -> tuple[float, float, str]:
    """(low, high) relative error of `metric` on this hardware, and where the band comes from."""
    residuals = ((hw.measured or {}).get("residuals") or {}).get(metric) or []
    if len(residuals) >= MIN_RESIDUALS:
        lo, hi = np.percentile(np.asarray(residuals, dtype=float), BAND_PERCENTILES)
        return float(lo), float(hi), f"calibration residuals (n={len(residuals)}, 5th-95th percentile)"
    kind = hw.provenance.kind
    d = DEFAULT_BAND.get(kind, DEFAULT_BAND["datasheet"])
    have = (f"{len(residuals)} calibration residuals, fewer than {MIN_RESIDUALS}" if residuals
            else "no calibration residuals")
    return -d, d, f"default +-{d:.0%} ({kind} profile, {have})"


def step_band(hw: HardwareProfile) -> tuple[float, float]:
    """(low, high) relative error of one engine step's time on this hardware."""
    return relative_band(hw, "step")[:2]


def interval(pred: Prediction, hw: HardwareProfile,
             propagated: dict[str, list[float]] | None = None) -> tuple[dict[str, list[float]], str]:
    """metric -> [low, high] for the prediction's latencies, throughputs and cost, and the basis;
    `propagated` (metric -> [low, high], from simulations at the step band) widens the metrics it has."""
    out: dict[str, list[float]] = {}
    bases: dict[str, set[str]] = {}             # basis -> the metrics whose band it is
    values = {f: getattr(pred, f) for f in FIELDS}
    metric_of = dict(FIELDS)
    for key, v in (pred.percentiles or {}).items():
        values[key] = v
        metric_of[key] = key.split("_", 1)[0]
    for key, v in values.items():
        lo, hi, basis = relative_band(hw, metric_of[key])
        bases.setdefault(basis, set()).add(metric_of[key])
        out[key] = [v * (1 + lo), v * (1 + hi)]
        if propagated and key in propagated:
            a, b = propagated[key]
            out[key] = [min(out[key][0], a), max(out[key][1], b)]
    # Cost per token moves inversely with throughput.
    lo, hi, _ = relative_band(hw, "throughput")
    c = pred.cost_per_million_tokens
    out["cost_per_million_tokens"] = [c / (1 + hi), c / (1 + lo)] if lo > -1 else [c / (1 + hi), float("inf")]
    # One basis for all needs no names; several name the metrics each covers (some may have a few residuals, some none).
    text = list(bases) if len(bases) == 1 else [f"{', '.join(sorted(ms))}: {b}" for b, ms in sorted(bases.items())]
    if propagated:
        lo, hi = step_band(hw)
        text.append(f"latencies under load also simulated at step times {1 + lo:.2f}x-{1 + hi:.2f}x")
    return out, "; ".join(text)


def with_interval(pred: Prediction, hw: HardwareProfile,
                  propagated: dict[str, list[float]] | None = None) -> Prediction:
    """A copy of the prediction carrying its interval (Prediction.interval) and the interval's basis."""
    iv, basis = interval(pred, hw, propagated)
    return pred.model_copy(update={"interval": iv, "interval_basis": basis})
