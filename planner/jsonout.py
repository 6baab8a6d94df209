"""JSON for machines: strict JSON has no infinity or NaN, so non-finite numbers go out as null (an unbounded
interval end, the cost of a plan that does not fit, a metric with no samples)."""
from __future__ import annotations

import json
import math


def finite_or_null(x):
    """`x` with every non-finite float inside it replaced by None."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: finite_or_null(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_null(v) for v in x]
    return x


def dumps(doc, indent: int = 2) -> str:
    return json.dumps(finite_or_null(doc), indent=indent, default=str, allow_nan=False)
