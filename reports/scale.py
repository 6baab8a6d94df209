"""Axis scales: data values to pixels, with readable tick positions and labels (linear or log10)."""
from __future__ import annotations

import math
from dataclasses import dataclass

_SI = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(v: float) -> str:
    """Compact label for a tick or a value: 1.5k, 2G, 0.05, 120."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    a = abs(v)
    for f, suffix in _SI:
        if a >= f:
            return f"{v / f:.3g}{suffix}"
    return f"{v:.3g}"


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


@dataclass
class Scale:
    lo: float
    hi: float
    p0: float                       # pixel of lo
    p1: float                       # pixel of hi (may be < p0: y axes grow upwards)
    log: bool = False
    step: float = 0.0               # linear tick spacing chosen by fit()

    @classmethod
    def fit(cls, values, p0: float, p1: float, log: bool = False, zero: bool = False, pad: float = 0.0):
        """A scale covering `values` (non-finite and, on log scales, non-positive ones ignored).

        zero: include 0 (bar lengths, counts). pad: fraction of the span added on each side.
        """
        vs = [v for v in values if v is not None and math.isfinite(v) and (v > 0 or not log)]
        if not vs:
            lo, hi = (1.0, 10.0) if log else (0.0, 1.0)
        else:
            lo, hi = min(vs), max(vs)
        if zero and not log:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
            if hi - lo < 1e-9:
                lo, hi = lo - 0.5, hi + 0.5
            lo, hi = lo - pad * (hi - lo), hi + pad * (hi - lo)
            # Whole decades at the ends, so the first and last ticks sit on the frame.
            return cls(10 ** math.floor(lo + 1e-9), 10 ** math.ceil(hi - 1e-9), p0, p1, True)
        if hi - lo < 1e-12:
            lo, hi = (lo - 1, hi + 1) if lo == 0 else (lo - abs(lo) * 0.1, hi + abs(hi) * 0.1)
        span = hi - lo
        # Padding never pushes an all-positive (or all-negative) range across zero.
        lo = max(lo - pad * span, 0.0) if lo >= 0 else lo - pad * span
        hi = min(hi + pad * span, 0.0) if hi <= 0 else hi + pad * span
        step = _nice_step(hi - lo, 5)
        return cls(math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step, p0, p1, False, step)

    def __call__(self, v: float) -> float:
        if self.log:
            v = max(v, self.lo * 1e-3)
            t = (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        else:
            t = (v - self.lo) / (self.hi - self.lo)
        return self.p0 + t * (self.p1 - self.p0)

    def ticks(self) -> list[float]:
        if self.log:
            a, b = round(math.log10(self.lo)), round(math.log10(self.hi))
            every = max(1, math.ceil((b - a) / 8))
            ticks = [10.0 ** e for e in range(a, b + 1, every)]
            if b - a <= 2:                          # few decades: label 2x and 5x as well
                ticks = sorted(t * m for t in ticks for m in (1, 2, 5) if t * m <= self.hi)
            return ticks
        step = self.step or _nice_step(self.hi - self.lo, 5)
        n = int(round((self.hi - self.lo) / step))
        return [round(self.lo + i * step, 12) for i in range(n + 1)]
