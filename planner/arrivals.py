"""Request streams for the simulator: arrival times and token lengths, synthetic or from a trace file.

Synthetic arrivals follow `vllm bench serve` (shared/reference/metrics.md): rate=inf sends everything at
t=0, otherwise gaps are gamma(shape=b, scale=1/(rate*b)) so the mean rate is `rate` for any burstiness b
(b=1 is Poisson, b<1 burstier, b>1 smoother); "constant" spaces requests exactly 1/rate apart.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from planner.errors import UsageError
from planner.schemas import LengthDist, Workload

# Column names accepted in trace files (first match wins): what common trace formats call them.
TIME_KEYS = ("arrival_s", "timestamp", "time_s", "time", "arrival_time")
INPUT_KEYS = ("input_tokens", "prompt_tokens", "input_length", "context_tokens", "num_prefill_tokens")
OUTPUT_KEYS = ("output_tokens", "completion_tokens", "output_length", "generated_tokens", "num_decode_tokens")


@dataclass(frozen=True)
class Requests:
    """A request stream, sorted by arrival: seconds from the first arrival and integer token lengths (>= 1)."""
    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def offered_rate_rps(self) -> float:
        span = float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) > 1 else 0.0
        return (len(self) - 1) / span if span > 0 else math.inf


def arrival_times_s(n: int, rate_rps: float | None, arrival: str = "poisson", burstiness: float = 1.0,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """n absolute arrival times, the first at 0."""
    if rate_rps is None or math.isinf(rate_rps):
        return np.zeros(n)
    if arrival == "constant":
        return np.arange(n) / rate_rps
    shape = 1.0 if arrival == "poisson" else burstiness
    rng = rng or np.random.default_rng(0)
    gaps = rng.gamma(shape, 1.0 / (rate_rps * shape), n)
    gaps[0] = 0.0
    return np.cumsum(gaps)


def sample_lengths(dist: LengthDist, n: int, rng: np.random.Generator) -> np.ndarray:
    """n integer lengths >= 1; `min`/`max` bound a uniform and clip the other kinds.

    Log-normal `mean`/`std` describe the lengths themselves (what users read off a trace), so they are
    converted to the underlying normal's (mu, sigma) here: the same convention as the benchmark harness.
    """
    lo = dist.min if dist.min is not None else 1.0
    hi = dist.max if dist.max is not None else math.inf
    if dist.kind == "fixed":
        values = np.full(n, dist.mean)
    elif dist.kind == "uniform":
        u_lo = lo
        u_hi = dist.max if dist.max is not None else 2.0 * dist.mean - u_lo
        values = rng.uniform(u_lo, max(u_lo, u_hi), n)
    elif dist.kind == "normal":
        values = rng.normal(dist.mean, dist.std, n)
    else:
        sigma2 = math.log1p((dist.std / dist.mean) ** 2)
        values = rng.lognormal(math.log(dist.mean) - sigma2 / 2, math.sqrt(sigma2), n)
    return np.maximum(np.clip(np.rint(values), lo, hi), 1).astype(np.int64)


def synthetic(workload: Workload, n: int, seed: int = 0, rate_rps: float | None = None) -> Requests:
    """n requests drawn from a workload (its rate unless `rate_rps` is given). Same seed, same stream."""
    rng = np.random.default_rng(seed)
    rate = rate_rps if rate_rps is not None else workload.rate_rps
    times = arrival_times_s(n, rate, workload.arrival, workload.burstiness, rng)
    return Requests(times, sample_lengths(workload.input_tokens, n, rng),
                    sample_lengths(workload.output_tokens, n, rng))


def _pick(row: dict, keys: tuple[str, ...], path: Path, line: int) -> float:
    for k in keys:
        if k in row and row[k] not in (None, ""):
            try:
                return float(row[k])
            except (TypeError, ValueError):
                raise UsageError(f"{path}:{line}: {k}={row[k]!r} is not a number") from None
    raise UsageError(f"{path}:{line}: missing one of {', '.join(keys)}")


def load_trace(path: str | Path) -> Requests:
    """A trace of (arrival time in seconds, input tokens, output tokens): CSV with a header row, or JSONL
    (one object per line). Times are shifted so the first arrival is at 0; rows are sorted by time."""
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as e:
        raise UsageError(f"cannot read trace {path}: {e.strerror or e}") from None
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((i, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise UsageError(f"{path}:{i}: not JSON ({e.msg})") from None
    else:
        rows = list(enumerate(csv.DictReader(text.splitlines()), 2))
    if not rows:
        raise UsageError(f"trace {path} has no requests")
    t = np.array([_pick(r, TIME_KEYS, path, i) for i, r in rows])
    inp = np.array([_pick(r, INPUT_KEYS, path, i) for i, r in rows])
    out = np.array([_pick(r, OUTPUT_KEYS, path, i) for i, r in rows])
    order = np.argsort(t, kind="stable")
    t = t[order] - t[order][0]
    as_len = lambda a: np.maximum(np.rint(a[order]), 1).astype(np.int64)  # noqa: E731
    return Requests(t, as_len(inp), as_len(out))


def harness_requests(workload: Workload, n: int, seed: int) -> Requests:
    """The request stream the bench harness sends (backends/harness/runner.py): its arrival offsets are 0, g0,
    g0+g1, ... from one gamma draw of default_rng(seed) (`synthetic` starts from g1, a different stream);
    lengths as synthetic draws them (fixed lengths in the accuracy runs)."""
    reqs = synthetic(workload, n, seed)
    rate = workload.rate_rps
    if rate is None or math.isinf(rate) or workload.arrival == "constant":
        return reqs
    shape = 1.0 if workload.arrival == "poisson" else workload.burstiness
    gaps = np.random.default_rng(seed).gamma(shape, 1.0 / (rate * shape), n)
    times = np.concatenate([[0.0], np.cumsum(gaps[:-1])])
    return replace(reqs, arrival_s=times)
