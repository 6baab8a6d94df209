"""Request arrival times: offsets in seconds from the start of the measured phase."""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

_BLOCK = 4096   # gaps are drawn in blocks: one NumPy call per block, not per request


def arrival_offsets_s(rate_rps: float, arrival: str, burstiness: float,
                      rng: np.random.Generator) -> Iterator[float]:
    """Endless absolute offsets, the first at 0 (the runner sleeps to each, it never chains sleeps).

    rate=inf sends everything at t=0. Constant spacing is 1/rate; Poisson is gamma with shape 1;
    gamma gaps have shape b and scale 1/(rate*b), so the mean rate stays `rate` for any burstiness.
    """
    if math.isinf(rate_rps):
        while True:
            yield 0.0
    t = 0.0
    shape = 1.0 if arrival == "poisson" else burstiness
    while True:
        if arrival == "constant":
            gaps = np.full(_BLOCK, 1.0 / rate_rps)
        else:
            gaps = rng.gamma(shape, 1.0 / (rate_rps * shape), _BLOCK)
        for gap in gaps:
            yield t
            t += float(gap)
