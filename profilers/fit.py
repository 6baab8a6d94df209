"""Turn raw measurements (seconds, FLOPs, bytes) into the efficiency curves and scalars the cost model
reads. Pure functions on plain rows: no torch, testable on synthetic data."""
from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Optional

from planner.costmodel import COMPUTE_DTYPE
from planner.schemas import CurvePoint

SMALL_MESSAGE_BYTES = 64 << 10          # all-reduces at or under this are latency (alpha) bound
LARGE_MESSAGE_BYTES = 256 << 20         # at or over this, bandwidth bound


def compute_dtype(weight_dtype: str) -> str:
    """The dtype the tensor cores run for a weight dtype, as the cost model prices it (weight-only
    int8 is dequantized into a bf16 GEMM)."""
    return COMPUTE_DTYPE.get(weight_dtype, weight_dtype)


def annotate_gemm(rows: list[dict], peak_flops: dict[str, float], bandwidth_bytes_per_s: float) -> None:
    """Add achieved rates and efficiencies to each GEMM row, in place. `efficiency` is against the
    datasheet peak of the row's compute dtype (hw.peak semantics: a missing dtype falls back to bf16),
    so that the cost model's flops / (peak(compute dtype) x efficiency) gives back the measured time."""
    for row in rows:
        flops_per_s = row["flops"] / row["seconds"]
        weight_bw = row["weight_bytes"] / row["seconds"]
        row["flops_per_s"] = flops_per_s
        row["efficiency"] = flops_per_s / (peak_flops.get(compute_dtype(row["dtype"])) or peak_flops["bf16"])
        row["efficiency_vs_bf16_peak"] = flops_per_s / peak_flops["bf16"]
        # Small M is bound by streaming the weights: how close to the bandwidth ceiling it gets.
        row["weight_bytes_per_s"] = weight_bw
        row["weight_bw_fraction"] = weight_bw / bandwidth_bytes_per_s


def median_by(rows: list[dict], key: str, value: str) -> list[CurvePoint]:
    """One point per distinct rows[key], y = median of rows[value]; sorted by x."""
    groups: dict[float, list[float]] = defaultdict(list)
    for row in rows:
        groups[row[key]].append(row[value])
    return [CurvePoint(x=float(x), y=float(statistics.median(ys))) for x, ys in sorted(groups.items())]


def gemm_curves(rows: list[dict]) -> dict[str, list[CurvePoint]]:
    """gemm_by_m per dtype: at each M, the median efficiency over the N x K shapes (annotated rows)."""
    by_dtype: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_dtype[row["dtype"]].append(row)
    return {dtype: median_by(group, "m", "efficiency") for dtype, group in by_dtype.items()}


def plateau(curve: list[CurvePoint], top: int = 2) -> float:
    """The large-x end of a curve (median of its `top` largest-x points): the scalar default the cost
    model falls back to, e.g. GEMM efficiency at large M or bandwidth efficiency for large copies."""
    tail = sorted(curve, key=lambda p: p.x)[-top:]
    return float(statistics.median(p.y for p in tail))


def memory_curve(rows: list[dict], bandwidth_bytes_per_s: float) -> list[CurvePoint]:
    """memory_by_bytes: x = bytes moved by one copy kernel (read + write), y = fraction of the datasheet
    bandwidth."""
    return [CurvePoint(x=float(r["bytes_moved"]), y=r["bytes_moved"] / r["seconds"] / bandwidth_bytes_per_s)
            for r in sorted(rows, key=lambda r: r["bytes_moved"])]


def bus_bytes(nbytes: float, n_gpus: int) -> float:
    """Bytes each GPU sends for an all-reduce of nbytes (ring: reduce-scatter then all-gather)."""
    return nbytes * 2.0 * (n_gpus - 1) / n_gpus


def allreduce_fit(sizes: list[int], seconds: list[float], n_gpus: int) -> tuple[float, Optional[float]]:
    """(alpha_s, bus bandwidth in bytes/s). alpha: median time of the small messages (the smallest
    message when none is small); busbw: median over the large messages, else over the largest two;
    None when only small messages were measured."""
    pairs = sorted(zip(sizes, seconds))
    small = [t for b, t in pairs if b <= SMALL_MESSAGE_BYTES] or [pairs[0][1]]
    large = [(b, t) for b, t in pairs if b >= LARGE_MESSAGE_BYTES] or [
        (b, t) for b, t in pairs[-2:] if b > SMALL_MESSAGE_BYTES]
    busbw = statistics.median(bus_bytes(b, n_gpus) / t for b, t in large) if large else None
    return float(statistics.median(small)), busbw


def seconds_curve(sizes: list[int], seconds: list[float]) -> list[CurvePoint]:
    return [CurvePoint(x=float(b), y=float(t)) for b, t in sorted(zip(sizes, seconds))]
