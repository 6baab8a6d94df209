"""Checks of `plan bench` option values, made before any server starts: a bad value is one line naming the
option and exit 2, never a run of zero requests, a silent default or a traceback after the server is up."""
from __future__ import annotations

import math

from pydantic import ValidationError

from planner.errors import UsageError, validation_problem
from planner.schemas import LengthDist

ARRIVALS = ("constant", "poisson", "gamma")
PROMPT_KINDS = ("ids", "text")
# LengthDist field -> the suffix of its option (--input-dist, --input-len, --input-std, ...)
_DIST_OPTION = {"kind": "dist", "mean": "len", "std": "std", "min": "min", "max": "max"}


def positive(value: float | None, option: str, example: str) -> None:
    """None (not given) passes; anything but a positive finite number is refused."""
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise UsageError(f"{option} must be a positive number, got {value:g}; e.g. {option} {example}")


def check_rate(rate: float) -> None:
    if not (rate > 0):   # NaN too
        raise UsageError(f"--rate must be a positive number of requests/s, or inf to send all at once; got {rate:g}")


def check_choice(value: str, option: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"unknown {option} {value!r}: use {', '.join(choices)}")


def check_counts(**counts: int | None) -> None:
    """Request counts: `num_requests=...` is checked as --num-requests >= 1 (warmup may be 0)."""
    for name, n in counts.items():
        least = 0 if name == "warmup" else 1
        if n is not None and n < least:
            raise UsageError(f"--{name.replace('_', '-')} must be an integer >= {least}, got {n}")


def length_dist(kind: str, mean: float, std: float, lo: float | None, hi: float | None, what: str) -> LengthDist:
    """--{what}-dist/-len/-std/-min/-max as a LengthDist; a bad value names its option."""
    try:
        return LengthDist(kind=kind, mean=mean, std=std, min=lo, max=hi)
    except ValidationError as exc:
        field = str((exc.errors()[0].get("loc") or ("",))[0])
        option = f"--{what}-{_DIST_OPTION[field]}" if field in _DIST_OPTION else f"the {what} length options"
        raise UsageError(f"bad {option}: {validation_problem(exc)}") from None


def numbers(text: str | None, option: str, example: str) -> list[float]:
    """A comma-separated list of positive numbers (None: not given)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()] if text else []
    except ValueError:
        raise UsageError(f"{option} takes comma-separated positive numbers, e.g. {option} {example}; "
                         f"got {text!r}") from None
    if text and not values or any(not (v > 0 and math.isfinite(v)) for v in values):
        raise UsageError(f"{option} takes comma-separated positive numbers, e.g. {option} {example}; got {text!r}")
    return values


def integers(text: str | None, option: str, example: str) -> list[int]:
    values = numbers(text, option, example)
    if any(v != int(v) for v in values):
        raise UsageError(f"{option} takes comma-separated positive integers, e.g. {option} {example}; got {text!r}")
    return [int(v) for v in values]


def rate_range(text: str) -> tuple[float, float]:
    """--search-rate LOW:HIGH in requests/s, 0 < LOW < HIGH."""
    lo, sep, hi = text.partition(":")
    try:
        bounds = (float(lo), float(hi)) if sep else ()
    except ValueError:
        bounds = ()
    if len(bounds) != 2 or not 0 < bounds[0] < bounds[1] < math.inf:
        raise UsageError(f"--search-rate takes LOW:HIGH requests/s with 0 < LOW < HIGH, e.g. --search-rate 1:64; "
                         f"got {text!r}")
    return bounds
