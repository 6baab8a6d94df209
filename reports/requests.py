"""Per-request detail of a benchmark, read from the shapes the harnesses write, in seconds.

Two layouts are accepted (the harness's, and vLLM's, which users already have):

* rows, under `samples` (what `plan bench run --per-request` writes) or `requests`:
  `[{i, t_start_s, ttft_ms, itl_ms: [...], e2el_ms, output_tokens, prompt_tokens, error, ok}]`.
  Each time may be named with `_s` (seconds), `_ms` (milliseconds) or no unit (seconds); the start may
  be `t_start`, `start` or `start_time`, relative or absolute: starts are re-based on the earliest.
* columns (`vllm bench serve --save-detailed`): `ttfts`, `itls`, `input_lens`, `output_lens`, `errors`,
  optionally `start_times`; times in seconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(slots=True)
class Req:
    index: int
    start_s: float | None           # relative to the first request's start
    ttft_s: float | None
    e2el_s: float | None
    itl_s: list[float] = field(default_factory=list)
    output_tokens: int | None = None
    prompt_tokens: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.error and self.ttft_s is not None

    @property
    def tpot_s(self) -> float | None:
        """metrics.md: (E2EL - TTFT) / (output tokens - 1), only when there are 2+ output tokens."""
        n = self.output_tokens if self.output_tokens is not None else (len(self.itl_s) + 1 if self.itl_s else None)
        if not self.ok or self.e2el_s is None or not n or n < 2:
            return None
        return (self.e2el_s - self.ttft_s) / (n - 1)


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _time(row: dict, *names: str) -> float | None:
    """The first of `name_s`, `name`, `name_ms` present, in seconds."""
    for n in names:
        for key, scale in ((f"{n}_s", 1.0), (n, 1.0), (f"{n}_ms", 1e-3)):
            v = _num(row.get(key))
            if v is not None:
                return v * scale
    return None


def _times(row: dict, *names: str) -> list[float]:
    for n in names:
        for key, scale in ((f"{n}_s", 1.0), (n, 1.0), (f"{n}_ms", 1e-3)):
            v = row.get(key)
            if isinstance(v, list):
                return [x * scale for x in v if _num(x) is not None]
    return []


def _int(v) -> int | None:
    return int(v) if _num(v) is not None else None


def _from_rows(rows: list[dict]) -> list[Req]:
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            continue
        err = r.get("error") or (None if r.get("ok", True) else "failed (no error text)")
        index = r.get("i", r.get("index"))
        out.append(Req(_int(index) if index is not None else i,
                       _time(r, "start", "t_start", "start_time"), _time(r, "ttft"), _time(r, "e2el", "latency"),
                       _times(r, "itl", "itls"), _int(r.get("output_tokens", r.get("output_len"))),
                       _int(r.get("prompt_tokens", r.get("prompt_len", r.get("input_len")))),
                       str(err) if err else None))
    return out


def _from_columns(doc: dict) -> list[Req]:
    ttfts = doc.get("ttfts") or []
    n = len(ttfts)

    def col(name):
        v = doc.get(name)
        return v if isinstance(v, list) and len(v) == n else [None] * n

    itls, outs, ins, errs, starts = col("itls"), col("output_lens"), col("input_lens"), col("errors"), \
        col("start_times")
    out = []
    for i in range(n):
        ttft = _num(ttfts[i])
        gaps = [x for x in (itls[i] or []) if _num(x) is not None]
        # vLLM gives no E2EL per request; it is TTFT plus the gaps (time of the last token message).
        e2el = ttft + sum(gaps) if ttft is not None else None
        err = errs[i] or (None if ttft is not None and ttft > 0 else "failed (no error text)")
        out.append(Req(i, _num(starts[i]), ttft if not err else None, e2el if not err else None, gaps,
                       _int(outs[i]), _int(ins[i]), str(err) if err else None))
    return out


def load_requests(doc: dict) -> list[Req]:
    """The requests of a bench document (empty when it has none), starts re-based to 0."""
    rows = doc.get("samples") if isinstance(doc.get("samples"), list) else doc.get("requests")
    if isinstance(rows, list):
        reqs = _from_rows(rows)
    elif isinstance(doc.get("ttfts"), list):
        reqs = _from_columns(doc)
    else:
        return []
    starts = [r.start_s for r in reqs if r.start_s is not None]
    t0 = min(starts) if starts else 0.0
    for r in reqs:
        if r.start_s is not None:
            r.start_s -= t0
    return reqs
