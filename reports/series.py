"""Series derived from per-request detail for the bench charts, always reduced to a bounded number of
points: a report's size and drawing time must not grow with the number of requests or tokens."""
from __future__ import annotations

import numpy as np

from reports.requests import Req

CDF_POINTS = 200
TIME_BINS = 120
GANTT_ROWS = 300


def cdf(samples: list[float], points: int = CDF_POINTS) -> list[tuple[float, float]]:
    """(value, cumulative fraction) at evenly spaced quantiles: the exact CDF shape at bounded cost."""
    if not samples:
        return []
    a = np.asarray(samples, dtype=np.float64)
    if a.size <= points:
        xs = np.sort(a)
        return [(float(x), (i + 1) / a.size) for i, x in enumerate(xs)]
    qs = np.linspace(0.0, 1.0, points)
    return [(float(x), float(q)) for x, q in zip(np.quantile(a, qs), qs)]


def _token_times(r: Req) -> np.ndarray:
    """When the request's output tokens arrived (from its start); spread evenly without ITL detail."""
    first = r.start_s + r.ttft_s
    if r.itl_s:
        return first + np.concatenate(([0.0], np.cumsum(r.itl_s)))
    n = r.output_tokens or 1
    end = r.start_s + (r.e2el_s if r.e2el_s is not None else r.ttft_s)
    return np.linspace(first, end, n)


def over_time(reqs: list[Req], bins: int = TIME_BINS) -> dict[str, list[tuple[float, float]]] | None:
    """Output tokens/s, in-flight requests and completions/s per time bin; None without start times."""
    timed = [r for r in reqs if r.start_s is not None and (r.e2el_s is not None or r.ttft_s is not None)]
    if not timed:
        return None
    ok = [r for r in timed if r.ok]
    starts = np.array([r.start_s for r in timed])
    ends = np.array([r.start_s + (r.e2el_s if r.e2el_s is not None else r.ttft_s) for r in timed])
    tokens = np.concatenate([_token_times(r) for r in ok]) if ok else np.array([])
    # Rounded ITLs can put the last token a hair after the recorded end: the axis covers both.
    horizon = max(float(ends.max()), float(tokens.max()) if tokens.size else 0.0) or 1.0
    edges = np.linspace(0.0, horizon, bins + 1)
    width = edges[1] - edges[0]
    mids = (edges[:-1] + edges[1:]) / 2
    tok_rate = np.histogram(tokens, edges)[0] / width
    done_rate = np.histogram([r.start_s + r.e2el_s for r in ok if r.e2el_s is not None], edges)[0] / width
    in_flight = (np.searchsorted(np.sort(starts), mids, "right") - np.searchsorted(np.sort(ends), mids, "right"))
    return {"output_tok_s": list(zip(mids.tolist(), tok_rate.tolist())),
            "in_flight": list(zip(mids.tolist(), in_flight.astype(float).tolist())),
            "completed_rps": list(zip(mids.tolist(), done_rate.tolist()))}


def sample(reqs: list[Req], n: int = GANTT_ROWS) -> list[Req]:
    """At most n requests, evenly spread over the run (every failure kept while they fit)."""
    if len(reqs) <= n:
        return list(reqs)
    failed = [r for r in reqs if not r.ok][: n // 4]
    rest = [r for r in reqs if r.ok]
    k = n - len(failed)
    idx = np.unique(np.linspace(0, len(rest) - 1, k).astype(int)) if rest and k > 0 else []
    picked = [rest[i] for i in idx]
    return sorted(failed + picked, key=lambda r: (r.start_s if r.start_s is not None else 0.0, r.index))
