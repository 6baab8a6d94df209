"""Turn raw measurements (seconds, FLOPs, bytes) into the efficiency curves and scalars the cost model
reads. Pure functions on plain rows: no torch, testable on synthetic data."""
from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Optional

from planner.costmodel import COMPUTE_DTYPE, curve_points, fp8_gemv_bytes, interp_log
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


# --------------------------------------------------------------------------- the cost model's GEMM fit
SMALL_M = 32                    # at or under this M every measured GEMM streams its weights (memory bound)
COMPUTE_BOUND_RATIO = 1.5       # a row is compute bound when it takes this much longer than its memory time


def _gemm_bytes(row: dict) -> float:
    """Bytes a GEMM kernel moves: weights, activations in (fp8 GEMMs read fp8 activations), bf16 out."""
    act_in = 1 if row["dtype"] == "fp8" else 2
    return row["weight_bytes"] + row["m"] * row["k"] * act_in + row["m"] * row["n"] * 2


def gemm_memory_curves(rows: list[dict], bandwidth_bytes_per_s: float) -> dict[str, list[CurvePoint]]:
    """gemm_memory_by_bytes: for GEMMs that run their own dtype's kernel (not weight-only int8), x =
    weight bytes, y = median over the small-M rows of that weight size of bytes moved / time / bandwidth."""
    small = [dict(r, bw=_gemm_bytes(r) / r["seconds"] / bandwidth_bytes_per_s) for r in rows
             if r["m"] <= SMALL_M and compute_dtype(r["dtype"]) == r["dtype"]]
    by_dtype: dict[str, list[dict]] = defaultdict(list)
    for row in small:
        by_dtype[row["dtype"]].append(row)
    return {dtype: median_by(group, "weight_bytes", "bw") for dtype, group in by_dtype.items()}


def gemm_compute_curves(rows: list[dict], memory_curves: dict[str, list[CurvePoint]],
                        bandwidth_bytes_per_s: float) -> dict[str, list[CurvePoint]]:
    """gemm_compute_by_m: at each M, the median efficiency of the rows that are compute bound (measured
    time >= COMPUTE_BOUND_RATIO x the memory time the memory curve predicts); where none is, the best
    efficiency achieved (every time is at least its compute time, so that is the tightest bound the data
    gives). Capped so that compute time never falls as M grows (the cost model must be monotonic in M)."""
    curves = {}
    for dtype, mem in memory_curves.items():
        mem_curve = curve_points(mem)
        by_m: dict[float, list[dict]] = defaultdict(list)
        for r in rows:
            if r["dtype"] == dtype:
                by_m[r["m"]].append(r)
        points: list[CurvePoint] = []
        for m, group in sorted(by_m.items()):
            bound = [r["efficiency"] for r in group if r["seconds"] >= COMPUTE_BOUND_RATIO * _gemm_bytes(r) / (
                bandwidth_bytes_per_s * interp_log(mem_curve, r["weight_bytes"]))]
            eff = statistics.median(bound) if bound else max(r["efficiency"] for r in group)
            if points:
                eff = min(eff, points[-1].y * m / points[-1].x)
            points.append(CurvePoint(x=float(m), y=float(eff)))
        curves[dtype] = points
    return curves


def dequant_fraction(rows: list[dict], bandwidth_bytes_per_s: float) -> Optional[float]:
    """dequant_memory: weight-only int8 minus bf16 at the same small-M shape is the dequantize pass,
    which reads 1 and writes 2 bytes per weight; median of its bandwidth fraction. None without pairs."""
    bf16 = {(r["m"], r["n"], r["k"]): r["seconds"] for r in rows if r["dtype"] == "bf16"}
    fractions = [r["n"] * r["k"] * 3 / (r["seconds"] - bf16[key]) / bandwidth_bytes_per_s
                 for r in rows if r["dtype"] == "int8" and r["m"] <= SMALL_M
                 and (key := (r["m"], r["n"], r["k"])) in bf16 and r["seconds"] > bf16[key]]
    return float(statistics.median(fractions)) if fractions else None


def gemm_model_fields(rows: list[dict], bandwidth_bytes_per_s: float) -> dict:
    """The Efficiency fields of the cost model's GEMM model, from annotated GEMM rows."""
    memory = gemm_memory_curves(rows, bandwidth_bytes_per_s)
    fields = {"gemm_memory_by_bytes": memory,
              "gemm_compute_by_m": gemm_compute_curves(rows, memory, bandwidth_bytes_per_s)}
    dequant = dequant_fraction(rows, bandwidth_bytes_per_s)
    if dequant is not None:
        fields["dequant_memory"] = dequant
    return {**fields, **fp8_gemv_fields(rows, bandwidth_bytes_per_s)}


def fp8_gemv_fields(rows: list[dict], bandwidth_bytes_per_s: float) -> dict:
    """fp8_gemv_latency_s and fp8_gemv_memory (one row), fp8_gemv_rows_memory (2-16 rows: another kernel) from the
    engine's weight-only fp8 GEMV timed beside fp8 rows (`gemv_seconds`), as the cost model prices it:
    t = latency + bytes / (bandwidth x fraction). One row: a least-squares line through time against bytes over
    the layer shapes (no latency where the line's intercept is negative); more rows: the median fraction after
    that latency. {} without such rows (a profile from before, or without Triton)."""
    gemv = [r for r in rows if r["dtype"] == "fp8" and r.get("gemv_seconds")]
    one = [(fp8_gemv_bytes(r["m"], r["n"], r["k"]), r["gemv_seconds"]) for r in gemv if r["m"] == 1]
    if len({b for b, _ in one}) < 2:
        return {}
    slope, latency = statistics.linear_regression([b for b, _ in one], [t for _, t in one])
    if latency < 0 or slope <= 0:
        latency = 0.0
        fraction = statistics.median(b / t for b, t in one) / bandwidth_bytes_per_s
    else:
        fraction = 1.0 / (slope * bandwidth_bytes_per_s)
    fields = {"fp8_gemv_latency_s": latency, "fp8_gemv_memory": fraction}
    by_bytes: dict[float, list[float]] = {}
    for b, t in one:
        by_bytes.setdefault(b, []).append(b / t / bandwidth_bytes_per_s)
    fields["fp8_gemv_by_bytes"] = [CurvePoint(x=b, y=statistics.median(f)) for b, f in sorted(by_bytes.items())]
    more = [fp8_gemv_bytes(r["m"], r["n"], r["k"]) / (r["gemv_seconds"] - latency) for r in gemv
            if r["m"] > 1 and r["gemv_seconds"] > latency]
    if more:
        fields["fp8_gemv_rows_memory"] = statistics.median(more) / bandwidth_bytes_per_s
    return fields
