"""Sampling token lengths from a planner LengthDist (fixed, uniform, normal, log-normal)."""
from __future__ import annotations

import math

import numpy as np

from planner.schemas import LengthDist


def sample_lengths(dist: LengthDist, n: int, rng: np.random.Generator) -> np.ndarray:
    """n integer lengths >= 1. `min`/`max` bound uniform and clip the others.

    For log-normal, `mean` and `std` describe the lengths themselves (what users know from a
    trace), not the underlying normal, so they are converted to (mu, sigma) here.
    """
    lo = dist.min if dist.min is not None else 1.0
    hi = dist.max if dist.max is not None else math.inf
    if dist.kind == "fixed":
        values = np.full(n, dist.mean)
    elif dist.kind == "uniform":
        # Without bounds, a uniform around the mean that stays positive.
        u_lo = dist.min if dist.min is not None else 1.0
        u_hi = dist.max if dist.max is not None else 2.0 * dist.mean - u_lo
        values = rng.uniform(u_lo, u_hi, n)
    elif dist.kind == "normal":
        values = rng.normal(dist.mean, dist.std, n)
    else:
        sigma2 = math.log1p((dist.std / dist.mean) ** 2)
        values = rng.lognormal(math.log(dist.mean) - sigma2 / 2, math.sqrt(sigma2), n)
    return np.maximum(np.clip(np.rint(values), lo, hi), 1).astype(np.int64)
