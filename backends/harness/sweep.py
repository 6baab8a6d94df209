"""Sweeps over rates or concurrencies, and a search for the highest rate that meets SLOs."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from backends.harness.runner import LoadConfig
from backends.harness.slos import unmet
from planner.schemas import SLO

Measure = Callable[[LoadConfig], dict]


def sweep(measure: Measure, base: LoadConfig, *, rates: list[float] | None = None,
          concurrencies: list[int] | None = None) -> list[dict]:
    """One run per value, same requests (same seed) each time, stopping early if one is interrupted."""
    points = ([dataclasses.replace(base, rate_rps=r) for r in rates or []] +
              [dataclasses.replace(base, max_concurrency=c, rate_rps=math.inf) for c in concurrencies or []])
    runs = []
    for load in points:
        runs.append(measure(load))
        if runs[-1]["status"] == "interrupted":
            break
    return runs


def meets(run: dict, slos: list[SLO]) -> tuple[bool, list[str]]:
    """A probe passes when it completed, nothing failed, the client kept up, and every SLO holds."""
    why = unmet(slos, run["metrics"])
    if run["status"] != "complete" or run["metrics"]["failed"]:
        why.append(f"status {run['status']}, {run['metrics']['failed']} failed")
    if run["client"]["client_bound"]:
        why.append("client-bound: " + "; ".join(run["client"]["client_bound_reasons"]))
    return not why, why


def search_max_rate(measure: Measure, base: LoadConfig, slos: list[SLO], low_rps: float, high_rps: float,
                    *, steps: int = 6) -> dict:
    """Bisection on a log scale between low and high. Returns the best passing rate (None when even
    `low` fails) and every probe with its reasons."""
    probes = []

    def probe(rate: float) -> bool:
        run = measure(dataclasses.replace(base, rate_rps=rate))
        ok, why = meets(run, slos)
        probes.append({"rate_rps": rate, "meets": ok, "unmet": why, "run": run})
        return ok

    best = None
    if probe(low_rps):
        best = low_rps
        if probe(high_rps):
            best = high_rps
        else:
            lo, hi = low_rps, high_rps
            for _ in range(steps):
                mid = math.sqrt(lo * hi)
                if probe(mid):
                    lo = best = mid
                else:
                    hi = mid
                if probes[-1]["run"]["status"] == "interrupted":
                    break
    return {"max_rate_rps": best, "slos": [s.label for s in slos], "probes": probes}
