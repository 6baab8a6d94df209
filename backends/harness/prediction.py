"""The plan's predicted numbers beside the measured ones, with the error of each."""
from __future__ import annotations

import numpy as np

from planner.schemas import Plan, Prediction, Workload

# measured metric key -> (Prediction field, factor from the prediction's unit to the metric's)
_PAIRS = {
    "mean_ttft_ms": ("ttft_s", 1e3),
    "mean_tpot_ms": ("tpot_s", 1e3),
    "mean_e2el_ms": ("e2e_s", 1e3),
    "output_throughput": ("throughput_tok_s", 1.0),
}
_PERCENTILE_METRICS = {"ttft": "ttft", "tpot": "tpot", "itl": "itl", "e2e": "e2el"}


def predict(plan: Plan, workload: Workload, records: list, t0: float,
            engine: dict | None = None) -> tuple[Prediction | None, str | None]:
    """The planner's prediction of this run (planner.api.predict_run: at a rate, the simulation of the very
    requests sent, `records` from time `t0`, on the engine as it reported itself), imported lazily: a
    missing or failing model never stops a benchmark."""
    try:
        from planner.api import predict_run
        from planner.arrivals import Requests
    except ImportError:
        return None, "planner.api.predict_run is not available"
    try:
        sent = Requests(np.array([r.t_scheduled - t0 for r in records], dtype=float),
                        np.array([r.prompt_len for r in records], dtype=np.int64),
                        np.array([r.output_len for r in records], dtype=np.int64))
        return predict_run(plan, workload, sent, engine), None
    except Exception as exc:   # noqa: BLE001 - any model failure is reported beside the measurement
        return None, f"prediction failed: {type(exc).__name__}: {exc}"


def predicted_vs_measured(pred: Prediction, metrics: dict) -> list[dict]:
    rows = []
    pairs = dict(_PAIRS)
    for name in pred.percentiles or {}:     # e.g. "ttft_p90_s" -> p90_ttft_ms
        metric, _, rest = name.partition("_p")
        pct = rest.removesuffix("_s")
        if metric in _PERCENTILE_METRICS and pct and name.endswith("_s"):
            pairs[f"p{pct}_{_PERCENTILE_METRICS[metric]}_ms"] = (name, 1e3)
    # Requests served per second: what a simulated run completes (Prediction.requests_per_s is the capacity).
    if pred.simulation and "request_throughput_rps" in pred.simulation:
        pairs["request_throughput"] = ("request_throughput_rps", 1.0)
    for key, (field, factor) in pairs.items():
        predicted = getattr(pred, field, None)
        if predicted is None:
            predicted = (pred.percentiles or {}).get(field, (pred.simulation or {}).get(field))
        measured = metrics.get(key)
        if predicted is None or measured is None:
            continue
        predicted *= factor
        error = (measured - predicted) / predicted if predicted else None
        row = {"metric": key, "measured": measured, "predicted": predicted, "error": error}
        band = (pred.interval or {}).get(field)
        if band:            # the prediction's likely range (planner.uncertainty), in the metric's unit
            row["interval"] = [band[0] * factor, band[1] * factor]
            row["inside"] = band[0] * factor <= measured <= band[1] * factor
        rows.append(row)
    return rows
