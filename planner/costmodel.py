"""Roofline cost model of one engine step, calibratable by measured efficiency curves.

Pure functions: inputs in, numbers out, no I/O. Every operator of a transformer layer gets FLOPs and
bytes moved per GPU, and

    time = max(FLOPs / (peak x compute efficiency), bytes / (bandwidth x memory efficiency), issue interval)

Efficiencies come from the hardware profile: datasheet-era defaults, or curves a profiler measured
(GEMM compute efficiency by token dimension M, GEMM bandwidth by weight bytes, copy bandwidth by bytes
moved, all-reduce time by message size), interpolated linearly in log-x. A GEMM's compute ceiling is the best
efficiency the profiler measured, scaled by M / GEMM_TILE_M below a full tile (a tile computes all its rows),
or the measured curve where that is higher: the profiler's small-M GEMMs are memory bound, so there the curve
only bounds the ceiling from below (held-out engine steps agree better with this than with the curve itself).
A bf16 GEMM of a layer shape the profile timed as the engine runs it takes the profile's own times instead
(Hardware.measured_gemm_s): near the roofline corner the curves miss a shape by 5-20%.

Kernel times are device times as the profiler measures them, under CUDA graph replay. A kernel cannot
run shorter than `graph_kernel_overhead_s` (its device-side launch); kernels the model does not price
(the attention merge, small copies) cost that interval each, up to KERNELS_PER_LAYER a layer. Decode-only steps
replay a CUDA graph, so that is all; so do steps whose prompts are all fresh on the built-in engine's
whole-forward graphs.
Other steps are issued eagerly by the host, one kernel per `kernel_overhead_s`, while the GPU runs the
kernels already queued: such a step takes max(GPU time, launches x kernel_overhead_s), launch bound for
small prefills and GPU bound for large ones. With piecewise CUDA graphs (the built-in engine, up to its largest
token bucket) the step runs padded to its bucket and the host issues one graph per layer plus the attention's
own launches. On top of either comes the engine's host work per step: `step_overhead_s` plus
`per_seq_overhead_s` per sequence in the step, and `served_per_seq_overhead_s` more behind a streaming server;
with async scheduling the share `async_hidden_fraction` of it overlaps the GPU's work (the rest adds to it).

A step is a batch *composition* (continuous batching): prefill chunks and decode sequences together.
"""
from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field, fields, replace
from functools import partial
from itertools import accumulate

from planner.schemas import CurvePoint, HardwareProfile, ModelSpec

ACT_BYTES = 2                       # activations are bf16
FP32_BYTES = 4
# Bytes per parameter of a linear layer's weight, scales included:
# fp8/int8 per output channel (2-byte scale per row, negligible), int4 with a 2-byte scale per group of 128.
WEIGHT_BYTES_PER_PARAM = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5 + 2 / 128}
KV_BYTES_PER_ELEMENT = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0}
# Weight-only int8/int4 dequantize into bf16 GEMMs; fp8 weights use fp8 tensor cores where the chip has them.
COMPUTE_DTYPE = {"bf16": "bf16", "fp16": "fp16", "fp8": "fp8", "int8": "bf16", "int4": "bf16"}
GEMM_TILE_M = 128                   # rows of a GEMM tile (cuBLAS / CUTLASS compute-bound kernels)
# An fp8 linear in the built-in engine: up to this many rows a weight-only GEMV (fp8 weights widened in the
# kernel, bf16 activations); above, per-token activation quantization (one kernel) then the fp8 GEMM.
FP8_GEMV_MAX_ROWS = 16
# ... and the row buckets at which the engine times that GEMV against quantization + GEMM per weight shape.
FP8_TUNED_ROWS = (2, 4, 8, 16)
KERNELS_PER_LAYER = 12              # norms, rope, qkv, attention, o, gate_up, act, down, residual adds
NORM_KERNELS_PER_LAYER = 2          # ... of which the two RMSNorms (with their residual adds)
# Per layer, the host launches of an eager step's attention. Per-sequence SDPA (engines before varlen prefill):
# slices, GQA expansion, SDPA and the copy back for each prefill sequence. Varlen: one flash call and its copy,
# two K/V gathers when a chunk follows a cached prefix; the decodes of a mixed step add the split-K kernel,
# its merge and their copy.
EAGER_KERNELS_PER_PREFILL_SEQ = 4
VARLEN_PREFILL_KERNELS, VARLEN_PREFIX_GATHER_KERNELS, MIXED_DECODE_KERNELS = 2, 2, 3
# Token buckets of the built-in engine's piecewise CUDA graphs (backends/engine/piecewise.py runs these).
# Steps between buckets pay the padding; above 512 tokens the buckets are at most 25% apart (Llama-3.1-8B, 512 + 16
# decodes: 20.2 ms at the 768 bucket, 15.4-16.3 ms at 640; H200). Above the largest a step runs eagerly (but see
# RACED_TOKEN_SIZES): buckets up to 4,096 ran Llama-3.1-8B's 2,056-token step 20% slower, padded to 2,560, than
# eagerly (it is GPU bound there).
# 1,152: a 1,024-token prompt beside up to 128 decodes (served Llama-3.1-8B, H200: such steps 27-31 ms, against
# 29-32 ms at the 1,280 bucket on another machine).
PIECEWISE_TOKEN_SIZES = (16, 32, 64, 128, 256, 384, 512, 640, 768, 896, 1024, 1152, 1280, 1536, 1792, 2048)
# Larger buckets, at most ~12-20% apart, that the engine captures in turn at start-up while a step just above the
# previous one (the most padding) replays faster on them than it runs eagerly; from the first it does not, steps
# run eagerly. A small model's eager step is host bound, and hosts differ: Llama-3.2-1B fp8's 2,048-token prompt +
# 8 decodes took 8.2, 10.3, 13.9 and (beside 100 decodes) 23 ms eagerly on four H200 machines, against 7.1 ms for
# the prompt alone on the 2,048 graph. A large one is GPU bound, and padding is what a graph would add.
RACED_TOKEN_SIZES = (2304, 2560, 2816, 3072, 3584, 4096, 4608, 5120, 6144, 7168, 8192)
# ... and the most fresh prompts (no cached prefix) a step may hold to replay as one whole-forward graph, and the
# largest bucket captured so: above it the host is not what bounds a step, and the captured flash call's empty
# programs cost more than the launches it saves (Llama-3.2-1B, 2,048-token prompt, H200: +3%; at 1,152 tokens
# Llama-3.1-8B beside 48 decodes was the same with and without, 30.3 / 30.5 ms).
WHOLE_GRAPH_PREFILLS = 8
WHOLE_GRAPH_MAX_TOKENS = 1280
# Batch sizes of the built-in engine's decode CUDA graphs (backends/engine/model_runner.py captures these); a batch
# pads up to the next. Engines before 2026-12-03 captured powers of two, and their traces do not list them: there 65
# decodes ran the 128 graph, ~1 ms a step more than 64 did (served Llama-3.1-8B, H200: 8.1 against 7.1 ms).
DECODE_GRAPH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512)
POW2_DECODE_GRAPH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


# --------------------------------------------------------------------------- interpolation of curves
def curve_points(points: list[CurvePoint], log_y: bool = False) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A curve in the form interp_log reads; log_y stores log(y), for quantities that follow a power law."""
    pts = sorted((math.log(max(p.x, 1e-12)), math.log(max(p.y, 1e-12)) if log_y else p.y) for p in points)
    return tuple(p[0] for p in pts), tuple(p[1] for p in pts)


def interp_log(curve: tuple[tuple[float, ...], tuple[float, ...]], x: float) -> float:
    """Linear interpolation in log(x), clamped at the ends."""
    xs, ys = curve
    lx = math.log(max(x, 1e-12))
    if lx <= xs[0]:
        return ys[0]
    if lx >= xs[-1]:
        return ys[-1]
    i = bisect_left(xs, lx)
    t = (lx - xs[i - 1]) / (xs[i] - xs[i - 1])
    return ys[i - 1] + t * (ys[i] - ys[i - 1])


def _running_max(curve: tuple[tuple[float, ...], tuple[float, ...]]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    xs, ys = curve
    out, top = [], -math.inf
    for y in ys:
        top = max(top, y)
        out.append(top)
    return xs, tuple(out)


class Hardware:
    """A hardware profile with its curves prepared for fast lookup (built once per profile)."""

    def __init__(self, hw: HardwareProfile):
        self.profile = hw
        e = hw.efficiency
        self.name = hw.name
        self.bandwidth = hw.memory_bandwidth_bytes_per_s
        self.gemm_eff = dict(e.gemm)
        self.gemm_curves = {k: curve_points(v) for k, v in e.gemm_by_m.items() if v}
        # Compute efficiency grows about linearly with M below a full tile: interpolate it log-log.
        self.compute_curves = {k: curve_points(v, log_y=True) for k, v in e.gemm_compute_by_m.items() if v}
        self.full_tile_eff = {k: math.exp(max(c[1])) for k, c in self.compute_curves.items()}
        self.gemm_mem_curves = {k: curve_points(v) for k, v in e.gemm_memory_by_bytes.items() if v}
        self.fp8_gemv_curve = curve_points(e.fp8_gemv_by_bytes) if e.fp8_gemv_by_bytes else None
        self.mem_eff = e.memory
        self.attn_curves = {int(k): curve_points(v, log_y=True) for k, v in e.attention_compute_by_len.items() if v}
        self.attn_mem_factor = {int(k): v for k, v in e.attention_memory_by_head_dim.items()}
        self.mem_curve = curve_points(e.memory_by_bytes) if e.memory_by_bytes else None
        # A larger message is never faster: the running max over the measured all-reduce curve (noise).
        self.ar_curves = {int(k): _running_max(curve_points(v)) for k, v in e.allreduce_by_bytes.items() if v}
        self.link_bw = hw.interconnect.bandwidth_bytes_per_s
        self.e = e
        self.kind = hw.provenance.kind
        # GEMM shapes recur across steps, trials and simulated requests: cost each one once.
        self.gemm_memo: dict[tuple, tuple[float, float, float, str]] = {}
        # The profile's own bf16 GEMM times by layer shape (N, K): [(M, seconds)], where the profiler timed them as
        # the engine runs them (its rows name the library that won the engine's race: profiles since 2026-12-02;
        # the H100 profile of 2026-11-21 predates it, and its prefills fitted worse so, 5.1% -> 9.5% median).
        self.shape_times: dict[tuple[int, int], list[tuple[float, float]]] = {}
        rows = [r for r in ((hw.measured or {}).get("gemm") or [])
                if r.get("timing") == "graph" and r.get("dtype") == "bf16"]
        for r in rows if any("library" in r for r in rows) else []:
            self.shape_times.setdefault((r["n"], r["k"]), []).append((r["m"], r["seconds"]))
        for key, v in self.shape_times.items():     # more rows never take less time (timing noise): running max
            v.sort()
            self.shape_times[key] = list(zip([m for m, _ in v], accumulate((t for _, t in v), max)))
        self.race_memo: dict = {}       # raced_buckets: by Deployment identity and by its fields

    def measured_gemm_s(self, m: float, n: float, k: float) -> float | None:
        """A bf16 GEMM of a shape the profile timed: log-log between the nearest two M it timed (above them, linear).
        Near the roofline corner (M ~128 on an H200) the fitted curves priced Llama-3.1-8B's layers 10% fast and
        other shapes up to 20% either way; the shape's own times carry that (H200-grid13..15, ACCURACY.md)."""
        pts = self.shape_times.get((int(n), int(k)))
        if not pts or m < pts[0][0]:
            return None
        if m >= pts[-1][0]:             # past the largest M timed (16,384): compute bound, linear in M
            return pts[-1][1] * m / pts[-1][0]
        i = max(1, bisect_left(pts, (m, 0.0)))
        (m0, t0), (m1, t1) = pts[i - 1], pts[i]
        f = (math.log(m) - math.log(m0)) / (math.log(m1) - math.log(m0)) if m1 > m0 else 0.0
        return t0 * (t1 / t0) ** f

    def peak(self, dtype: str) -> float:
        return self.profile.peak(dtype)

    def gemm_efficiency(self, dtype: str, m: float) -> float:
        """Compute efficiency of a GEMM with M rows: from the fitted compute-bound curve, the best measured
        efficiency x min(1, M / GEMM_TILE_M) or the curve where higher (module docstring: a 70B layer at 32 rows
        is priced by its weight stream, not by an 8B layer's streaming rate read as compute); else the older
        median-over-shapes curve, else the scalar."""
        curve = self.compute_curves.get(dtype)
        if curve is not None:
            return max(math.exp(interp_log(curve, m)), self.full_tile_eff[dtype] * min(1.0, m / GEMM_TILE_M))
        curve = self.gemm_curves.get(dtype)
        if curve is not None:
            return interp_log(curve, m)
        return self.gemm_eff.get(dtype, self.gemm_eff.get("bf16", 0.8))

    def gemm_memory_efficiency(self, dtype: str, weight_bytes: float, nbytes: float) -> float:
        """Bandwidth fraction of a weight-streaming GEMM: by its weight bytes where measured, else that of
        a copy of the same bytes."""
        curve = self.gemm_mem_curves.get(dtype) or self.gemm_mem_curves.get("bf16")
        return interp_log(curve, weight_bytes) if curve is not None else self.memory_efficiency(nbytes)

    def attention_memory_efficiency(self, head_dim: int) -> float:
        """Decode attention's fraction of bandwidth: the scalar, times the nearest measured head size's factor."""
        if not self.attn_mem_factor:
            return self.e.attention_memory
        d = min(self.attn_mem_factor, key=lambda k: abs(math.log(k / head_dim)))
        return self.e.attention_memory * self.attn_mem_factor[d]

    def _attn_curve(self, head_dim: int):
        """The measured prefill-attention curve of the nearest head size, or None."""
        if not self.attn_curves:
            return None
        return self.attn_curves[min(self.attn_curves, key=lambda k: abs(math.log(k / head_dim)))]

    def attention_shortest_len(self, head_dim: int) -> float:
        """The shortest causal prefill the profile measured (nearest head size), 0 without curves."""
        curve = self._attn_curve(head_dim)
        return math.exp(curve[0][0]) if curve else 0.0

    def attention_compute_efficiency(self, seq_tokens: float, head_dim: int) -> float:
        """Prefill attention's fraction of bf16 peak for causal sequences of `seq_tokens`: the measured curve of
        the nearest head size (log-log: it grows about as a power of the length), else the scalar."""
        curve = self._attn_curve(head_dim)
        return math.exp(interp_log(curve, seq_tokens)) if curve else self.e.attention_compute

    def issue_interval_s(self, graphs: bool) -> float:
        """Shortest time per kernel: how fast kernels are issued, replayed from a CUDA graph or eagerly."""
        return self.e.graph_kernel_overhead_s if graphs else self.e.kernel_overhead_s

    def memory_efficiency(self, nbytes: float) -> float:
        return interp_log(self.mem_curve, nbytes) if self.mem_curve else self.mem_eff


_PREPARED: dict[int, Hardware] = {}


def prepare(hw: HardwareProfile | Hardware) -> Hardware:
    """The lookup-ready form of a profile, built once per profile object."""
    if isinstance(hw, Hardware):
        return hw
    h = _PREPARED.get(id(hw))
    if h is None or h.profile is not hw:          # ids are reused after garbage collection
        h = _PREPARED[id(hw)] = Hardware(hw)
    return h


# --------------------------------------------------------------------------- primitive costs
@dataclass(frozen=True)
class OpCost:
    name: str
    flops: float
    bytes: float
    time_s: float
    bound: str                      # "compute" | "memory" | "communication" | "overhead"
    count: int = 1                  # how many times per step (layers)

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else float("inf")

    @property
    def total_s(self) -> float:
        return self.time_s * self.count


def roofline_s(hw: Hardware, flops: float, nbytes: float, compute_dtype: str, compute_eff: float,
               mem_eff: float | None = None, knee: float = 0.0) -> tuple[float, str]:
    """max(compute time, memory time) and which one binds. With `knee` s > 0 the corner is soft,
    (t_c^(1/s) + t_m^(1/s))^s: a kernel near the crossover is limited by both at once (s = 0.25 adds 19% where
    the two are equal, under 1% where one is twice the other)."""
    t_c = flops / (hw.peak(compute_dtype) * compute_eff) if flops else 0.0
    t_m = nbytes / (hw.bandwidth * (mem_eff if mem_eff is not None else hw.memory_efficiency(nbytes)))
    bound = "compute" if t_c >= t_m else "memory"
    if knee > 0.0 and t_c > 0.0:
        hi, lo = max(t_c, t_m), min(t_c, t_m)
        return hi * (1.0 + (lo / hi) ** (1.0 / knee)) ** knee, bound
    return max(t_c, t_m), bound


def fp8_gemv_bytes(m: float, n: float, k: float) -> float:
    """What the engine's weight-only fp8 GEMV moves: the fp8 weight once, bf16 activations in and out."""
    return n * k * WEIGHT_BYTES_PER_PARAM["fp8"] + (m * k + m * n) * ACT_BYTES


def _gemm_kernel(hw: Hardware, m: float, n: float, k: float, weight_dtype: str,
                 engine: bool = True, fp8_rows_tuned: bool = True, gemv: bool = True,
                 fp8_gemv_won: bool | None = None) -> tuple[float, float, float, str]:
    """(FLOPs, bytes, seconds, bound) of Y[m,n] = X[m,k] @ W[k,n], W stored in `weight_dtype`, without
    the issue floor. Weight-only int8/int4 run as the profiler times them: a dequantize pass (read the
    quantized weights, write bf16), a bf16 GEMM, and the per-channel scale on the output. `engine`: an fp8
    linear as the built-in engine runs it (GEMV at few rows, else activation quantization + GEMM), not the bare
    GEMM the profiler times; `fp8_rows_tuned`: at 2-16 rows the engine takes whichever of the GEMV and the GEMM
    path it timed faster for the shape (engines since 2026-12-02; before, always the GEMV): the one it reported
    (`fp8_gemv_won`), else the one this model prices faster."""
    key = (m, n, k, weight_dtype, engine, fp8_rows_tuned, gemv, fp8_gemv_won)
    hit = hw.gemm_memo.get(key)
    if hit is not None:
        return hit
    cdt = COMPUTE_DTYPE[weight_dtype]
    flops = 2.0 * m * n * k
    if engine and gemv and cdt == "fp8" and m <= FP8_GEMV_MAX_ROWS:
        nbytes = fp8_gemv_bytes(m, n, k)
        if m <= 1 and hw.fp8_gemv_curve:
            t = nbytes / (hw.bandwidth * interp_log(hw.fp8_gemv_curve, nbytes))
        else:
            eff = hw.e.fp8_gemv_memory if m <= 1 else hw.e.fp8_gemv_rows_memory
            t = hw.e.fp8_gemv_latency_s + nbytes / (hw.bandwidth * eff)
        result = (flops, nbytes, t, "memory")
        if m > 1 and fp8_rows_tuned and not fp8_gemv_won:
            gemm = _gemm_kernel(hw, m, n, k, weight_dtype, gemv=False)
            result = gemm if fp8_gemv_won is False else min(result, gemm, key=lambda r: r[2])
        hw.gemm_memo[key] = result
        return result
    act_in = 1 if cdt == "fp8" else ACT_BYTES   # fp8 GEMMs quantize activations first
    gemm_weight_bytes = n * k * WEIGHT_BYTES_PER_PARAM[cdt]
    nbytes = gemm_weight_bytes + m * k * act_in + m * n * ACT_BYTES
    # Tile quantization: above one tile, a GEMM computes whole GEMM_TILE_M-row tiles (the profiler's M are
    # multiples of it; a mixed step's 1024 prompt tokens + 13 decodes run 9 tiles, not 8.1).
    m_run = math.ceil(m / GEMM_TILE_M) * GEMM_TILE_M if m > GEMM_TILE_M else m
    t, bound = roofline_s(hw, flops * m_run / m, nbytes, cdt, hw.gemm_efficiency(cdt, m_run),
                          hw.gemm_memory_efficiency(cdt, gemm_weight_bytes, nbytes), hw.e.gemm_knee)
    # bf16 only: fp8 shapes' own _scaled_mm times (plus the quantize priced below) fitted grid15 worse (BENCHMARKS)
    timed = hw.measured_gemm_s(m_run, n, k) if cdt == "bf16" else None
    if timed is not None:
        t = timed
    if engine and cdt == "fp8":      # the per-token quantize kernel: read bf16 x, write fp8 x and its scales
        quant_bytes = m * k * (ACT_BYTES + 1) + m * FP32_BYTES
        t += max(quant_bytes / (hw.bandwidth * hw.memory_efficiency(quant_bytes)), hw.e.graph_kernel_overhead_s)
        nbytes += quant_bytes
    if cdt != weight_dtype:
        dequant_bytes = n * k * (WEIGHT_BYTES_PER_PARAM[weight_dtype] + ACT_BYTES)
        scale_bytes = 2 * m * n * ACT_BYTES
        t += (dequant_bytes / (hw.bandwidth * hw.e.dequant_memory)
              + scale_bytes / (hw.bandwidth * hw.memory_efficiency(scale_bytes)))
        nbytes += dequant_bytes + scale_bytes
    hw.gemm_memo[key] = result = (flops, nbytes, t, bound)
    return result


def grouped_gemm_cost(hw: Hardware, name: str, tokens: float, experts: float, n: float, k: float, weight_dtype: str,
                      count: int, graphs: bool, tokens_quantized: float) -> OpCost:
    """The routed experts of an MoE layer as one grouped GEMM, the way vLLM's fused MoE kernel runs them: `experts`
    weights [k, n], each multiplying its share of `tokens` routed rows. The one kernel streams every hit expert's
    weights, so its bandwidth fraction is that of a GEMM streaming all of them; priced as separate GEMMs, each small
    expert paid a lone kernel's latency-bound fraction (DeepSeek-V3's fp8 experts, half the bytes, came out twice as
    slow as bf16). Compute runs in whole tiles per expert. fp8 activations are quantized once, `tokens_quantized`
    rows (the layer's tokens before gate_up, the routed rows before down)."""
    cdt = COMPUTE_DTYPE[weight_dtype]
    m = tokens / experts                        # rows per expert
    flops = 2.0 * tokens * n * k
    m_run = math.ceil(m / GEMM_TILE_M) * GEMM_TILE_M if m > GEMM_TILE_M else m
    weight_bytes = experts * n * k * WEIGHT_BYTES_PER_PARAM[cdt]
    act_in = 1 if cdt == "fp8" else ACT_BYTES
    nbytes = weight_bytes + tokens * k * act_in + tokens * n * ACT_BYTES
    t, bound = roofline_s(hw, flops * m_run / m, nbytes, cdt, hw.gemm_efficiency(cdt, m_run),
                          hw.gemm_memory_efficiency(cdt, weight_bytes, nbytes), hw.e.gemm_knee)
    if cdt == "fp8":                            # read bf16 x, write fp8 x and a scale per row
        quant_bytes = tokens_quantized * (k * (ACT_BYTES + 1) + FP32_BYTES)
        t += max(quant_bytes / (hw.bandwidth * hw.memory_efficiency(quant_bytes)), hw.e.graph_kernel_overhead_s)
        nbytes += quant_bytes
    if cdt != weight_dtype:                     # weight-only int8/int4: dequantize, then the bf16 GEMM (_gemm_kernel)
        dequant_bytes = experts * n * k * (WEIGHT_BYTES_PER_PARAM[weight_dtype] + ACT_BYTES)
        scale_bytes = 2 * tokens * n * ACT_BYTES
        t += (dequant_bytes / (hw.bandwidth * hw.e.dequant_memory)
              + scale_bytes / (hw.bandwidth * hw.memory_efficiency(scale_bytes)))
        nbytes += dequant_bytes + scale_bytes
    return OpCost(name, flops, nbytes, max(t, hw.issue_interval_s(graphs)), bound, count)


def gemm_cost(hw: Hardware, name: str, m: float, n: float, k: float, weight_dtype: str = "bf16",
              count: int = 1, graphs: bool = True, fp8_rows_tuned: bool = True,
              fp8_gemv_won: bool | None = None) -> OpCost:
    """Y[m,n] = X[m,k] @ W[k,n] with W stored in `weight_dtype`; `graphs`: issued from a CUDA graph."""
    flops, nbytes, t, bound = _gemm_kernel(hw, m, n, k, weight_dtype, fp8_rows_tuned=fp8_rows_tuned,
                                           fp8_gemv_won=fp8_gemv_won)
    return OpCost(name, flops, nbytes, max(t, hw.issue_interval_s(graphs)), bound, count)


def gemm_time_s(hw: HardwareProfile | Hardware, m: float, n: float, k: float, dtype: str = "bf16") -> float:
    """Time of one bare GEMM kernel under graph replay, as the profiler times it (public helper; the profilers
    validate it against held-out measurements)."""
    h = prepare(hw)
    return max(_gemm_kernel(h, m, n, k, dtype, engine=False)[2], h.issue_interval_s(True))


def copy_time_s(hw: HardwareProfile | Hardware, nbytes: float) -> float:
    """Time of a device-to-device copy moving `nbytes` (read + write counted), under graph replay. The
    bandwidth curve was measured per kernel that way, so it already holds the kernel's fixed cost."""
    h = prepare(hw)
    return max(nbytes / (h.bandwidth * h.memory_efficiency(nbytes)), h.issue_interval_s(True))


def allreduce_time_s(hw: HardwareProfile | Hardware, nbytes: float, n_gpus: int) -> float:
    """Ring all-reduce: alpha + bytes * 2(n-1)/n / bus bandwidth, or the measured curve for n GPUs."""
    if n_gpus <= 1:
        return 0.0
    h = prepare(hw)
    curve = h.ar_curves.get(n_gpus)
    if curve is not None:
        return interp_log(curve, nbytes)
    busbw = h.link_bw * h.e.allreduce_busbw_fraction
    return h.e.allreduce_alpha_s + nbytes * 2 * (n_gpus - 1) / n_gpus / busbw


# --------------------------------------------------------------------------- batch composition
@dataclass(frozen=True)
class Batch:
    """What one engine step processes. Build with `Batch.of` or directly from sums (fast path)."""

    prefill_tokens: int = 0         # new prompt tokens in this step (sum of chunk lengths)
    prefill_seqs: int = 0
    prefill_pairs: float = 0.0      # causal query-key pairs: sum of chunk * (context_before + (chunk + 1) / 2)
    prefill_kv_tokens: int = 0      # keys read by prefill chunks: sum of (context_before + chunk)
    decode_seqs: int = 0
    decode_ctx_tokens: int = 0      # sum of context lengths of the decoding sequences

    @staticmethod
    def of(prefills: list[tuple[int, int]] = (), decode_contexts: list[int] = ()) -> "Batch":
        """prefills: (chunk_tokens, context_before) pairs; decode_contexts: context length per sequence."""
        pt = sum(c for c, _ in prefills)
        pairs = sum(c * (b + (c + 1) / 2) for c, b in prefills)
        kv = sum(c + b for c, b in prefills)
        return Batch(pt, len(prefills), pairs, kv, len(decode_contexts), sum(decode_contexts))

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.decode_seqs

    @property
    def seqs(self) -> int:
        return self.prefill_seqs + self.decode_seqs


# --------------------------------------------------------------------------- the model on a deployment
@dataclass(frozen=True)
class Deployment:
    """One replica: the model sharded over tp x pp GPUs, its weights and KV cache in given dtypes."""

    model: ModelSpec
    tp: int = 1
    pp: int = 1
    weight_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    cuda_graphs: bool = True        # decode-only steps replay CUDA graphs (vLLM and the built-in engine do)
    # Batch sizes the graphs were captured at: a decode batch runs padded up to the next one (the built-in
    # engine's; vLLM's are 1, 2, 4 then multiples of 8, a few percent apart at most).
    graph_batch_sizes: tuple[int, ...] = DECODE_GRAPH_SIZES
    # Steps with prefill tokens: piecewise graphs at these token buckets (none: eager), one varlen attention call
    # for all prefill chunks (else one per chunk). Older engine traces say neither.
    piecewise_sizes: tuple[int, ...] = PIECEWISE_TOKEN_SIZES
    # ... and larger ones the engine would race at start-up (raced_buckets decides as it would); an engine's own
    # report lists the outcome in piecewise_sizes and races none here.
    raced_sizes: tuple[int, ...] = RACED_TOKEN_SIZES
    varlen_prefill: bool = True
    # ... and a step of fresh prompts only (whole_graph) replays one graph for its whole forward (engines since
    # 2026-12-02, eighth session), and so does one that also carries decodes (since the ninth session).
    whole_graph_prefill: bool = True
    whole_graph_mixed: bool = True
    whole_graph_max_tokens: int = WHOLE_GRAPH_MAX_TOKENS     # the largest bucket with such graphs
    served: bool = True             # behind an HTTP server that streams tokens (else an offline engine loop)
    # The host schedules and launches step n+1 while the GPU runs step n (the built-in engine's
    # --async-scheduling, vLLM's async scheduling): a step then takes the longer of the two, not their sum.
    async_scheduling: bool = False
    # fp8 linears at 2-16 rows run the faster of the weight-only GEMV and quantization + GEMM for their shape (the
    # built-in engine times both at start-up since 2026-12-02; before, it always took the GEMV).
    fp8_rows_tuned: bool = True
    # ... and which it chose, as it reported them: (N, K, rows, whether the GEMV won) per weight shape and row bucket
    # of FP8_TUNED_ROWS (none known: the path this model prices faster).
    fp8_gemv_choices: frozenset[tuple[int, int, int, bool]] = frozenset()
    # Row counts whose steps run each layer's RMSNorms inside the GEMVs around them, no norm kernels (the built-in
    # engine's start-up race, reported since 2026-12-03, seventeenth session, as `fused_norms`; none known: none).
    folded_norm_rows: frozenset[int] = frozenset()

    def fp8_gemv_won(self, n: float, k: float, rows: float) -> bool | None:
        """The engine's reported choice for an fp8 weight [n, k] at `rows` rows (2-16), or None if unknown."""
        if not self.fp8_gemv_choices or not 1 < rows <= FP8_GEMV_MAX_ROWS:
            return None
        bucket = next(r for r in FP8_TUNED_ROWS if r >= rows)
        for won in (True, False):
            if (int(n), int(k), bucket, won) in self.fp8_gemv_choices:
                return won
        return None

    @property
    def kv_heads_per_gpu(self) -> int:
        # KV heads are replicated when TP exceeds their number.
        return max(1, math.ceil(self.model.num_kv_heads / self.tp))

    @property
    def layers_per_stage(self) -> int:
        return math.ceil(self.model.num_layers / self.pp)

    def kv_bytes_per_token_layer(self) -> float:
        """KV-cache bytes one token occupies in one layer on one GPU."""
        m, b = self.model, KV_BYTES_PER_ELEMENT[self.kv_dtype]
        if m.is_mla:                                # compressed latent + rope key, not sharded by TP
            return (m.kv_lora_rank + m.qk_rope_head_dim) * b
        return 2 * self.kv_heads_per_gpu * m.head_dim * b

    def kv_bytes_per_token(self) -> float:
        """Per GPU, over the layers of the largest pipeline stage."""
        return self.kv_bytes_per_token_layer() * self.layers_per_stage


def _layer_groups(m: ModelSpec) -> list[tuple[int, bool, bool]]:
    """(layer count, is_moe, sliding_window) groups with identical cost."""
    groups = []
    dense = m.first_k_dense_layers if m.is_moe else m.num_layers
    moe = m.num_layers - dense
    for n, is_moe in ((dense, False), (moe, True)):
        if n <= 0:
            continue
        if m.sliding_window:                        # Gemma-2 alternates local and global attention
            groups += [(n - n // 2, is_moe, False), (n // 2, is_moe, True)]
        else:
            groups.append((n, is_moe, False))
    return groups


def _attention_ops(hw: Hardware, d: Deployment, b: Batch, window: int | None, count: int) -> list[OpCost]:
    m = d.model
    floor_s = hw.issue_interval_s(True)         # device-side minimum; eager issue is priced per step
    heads = m.num_attention_heads / d.tp
    kv_tok = d.kv_bytes_per_token_layer()
    if m.is_mla:
        # Prefill: un-absorbed heads (qk = nope+rope, v); decode: absorbed into the latent (qk = lora+rope, v = lora).
        qk_p, v_p = m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim
        qk_d, v_d = m.kv_lora_rank + m.qk_rope_head_dim, m.kv_lora_rank
    else:
        qk_p = v_p = qk_d = v_d = m.head_dim
    ops = []
    if b.prefill_tokens:
        pairs, kv_read = b.prefill_pairs, b.prefill_kv_tokens
        if window:
            pairs = min(pairs, b.prefill_tokens * window)
            kv_read = min(kv_read, b.prefill_seqs * window + b.prefill_tokens)
        flops = 2 * heads * (qk_p + v_p) * pairs
        nbytes = b.prefill_tokens * heads * (qk_p + v_p) * ACT_BYTES + kv_read * kv_tok
        # The length whose causal prefill has as many query-key pairs per sequence (L^2 / 2 each).
        seq_tokens = math.sqrt(2 * pairs / max(b.prefill_seqs, 1))
        t, bound = roofline_s(hw, flops, nbytes, "bf16", hw.attention_compute_efficiency(seq_tokens, qk_p),
                              hw.e.attention_memory)
        # Below the shortest measured prefill a call costs what that one did: short prefills are latency, not
        # the quadratic work (an H200's flash call over 128 tokens of 32 heads takes ~13 us).
        shortest = hw.attention_shortest_len(qk_p)
        if seq_tokens < shortest:
            floor_flops = 2 * heads * (qk_p + v_p) * shortest ** 2 / 2
            floor_s = max(floor_s, floor_flops / (hw.peak("bf16") * hw.attention_compute_efficiency(shortest, qk_p)))
        ops.append(OpCost("attention_prefill", flops, nbytes, max(t, floor_s), bound, count))
    if b.decode_seqs:
        ctx = b.decode_ctx_tokens
        if window:
            ctx = min(ctx, b.decode_seqs * window)
        flops = 2 * heads * (qk_d + v_d) * ctx
        nbytes = ctx * kv_tok + b.decode_seqs * heads * (qk_d + v_d) * ACT_BYTES
        t, bound = roofline_s(hw, flops, nbytes, "bf16", hw.e.attention_compute,
                              hw.attention_memory_efficiency(qk_d))
        ops.append(OpCost("attention_decode", flops, nbytes, max(t + hw.e.attention_decode_latency_s, floor_s), bound,
                          count))
    return ops


def _linear(hw: Hardware, d: Deployment, name: str, m: float, n: float, k: float, weight_dtype: str, count: int,
            graphs: bool) -> OpCost:
    """A linear layer of the deployment's model, on the path its engine takes for the shape."""
    return gemm_cost(hw, name, m, n, k, weight_dtype, count, graphs, d.fp8_rows_tuned, d.fp8_gemv_won(n, k, m))


def _projection_ops(hw: Hardware, d: Deployment, tokens: int, count: int, graphs: bool) -> list[OpCost]:
    m, tp, wd = d.model, d.tp, d.weight_dtype
    h = m.hidden_size
    lin = partial(_linear, hw, d)
    if m.is_mla:
        heads = m.num_attention_heads / tp
        ops = []
        if m.q_lora_rank:
            ops.append(lin("q_a_proj", tokens, m.q_lora_rank, h, wd, count, graphs))
            ops.append(lin("q_b_proj", tokens, heads * (m.qk_nope_head_dim + m.qk_rope_head_dim),
                                 m.q_lora_rank, wd, count, graphs))
        else:
            ops.append(lin("q_proj", tokens, heads * (m.qk_nope_head_dim + m.qk_rope_head_dim), h,
                                 wd, count, graphs))
        ops.append(lin("kv_a_proj", tokens, m.kv_lora_rank + m.qk_rope_head_dim, h, wd, count, graphs))
        ops.append(lin("kv_b_proj", tokens, heads * (m.qk_nope_head_dim + m.v_head_dim),
                             m.kv_lora_rank, wd, count, graphs))
        ops.append(lin("o_proj", tokens, h, heads * m.v_head_dim, wd, count, graphs))
        return ops
    q = m.num_attention_heads * m.head_dim / tp
    kv = d.kv_heads_per_gpu * m.head_dim
    return [lin("qkv_proj", tokens, q + 2 * kv, h, wd, count, graphs),
            lin("o_proj", tokens, h, q, wd, count, graphs)]


def expected_active_experts(num_experts: int, top_k: int, tokens: float) -> float:
    """Experts hit by at least one of `tokens` tokens under uniform routing."""
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** tokens)


def _mlp_ops(hw: Hardware, d: Deployment, tokens: int, is_moe: bool, count: int, graphs: bool) -> list[OpCost]:
    m, tp, wd = d.model, d.tp, d.weight_dtype
    h = m.hidden_size
    lin = partial(_linear, hw, d)
    if not is_moe:
        inter = m.intermediate_size / tp
        return [lin("mlp_gate_up", tokens, 2 * inter, h, wd, count, graphs),
                lin("mlp_down", tokens, h, inter, wd, count, graphs)]
    e, k = m.num_experts, m.num_experts_per_tok
    inter = (m.moe_intermediate_size or m.intermediate_size) / tp
    active = expected_active_experts(e, k, tokens)
    ops = [lin("moe_router", tokens, e, h, "bf16", count, graphs),
           grouped_gemm_cost(hw, "moe_gate_up", tokens * k, active, 2 * inter, h, wd, count, graphs, tokens),
           grouped_gemm_cost(hw, "moe_down", tokens * k, active, h, inter, wd, count, graphs, tokens * k)]
    if m.num_shared_experts:
        s_inter = (m.shared_expert_intermediate_size or inter * tp * m.num_shared_experts) / tp
        ops += [lin("shared_gate_up", tokens, 2 * s_inter, h, wd, count, graphs),
                lin("shared_down", tokens, h, s_inter, wd, count, graphs)]
    return ops


def _rope_store_bytes_per_token(d: Deployment) -> float:
    """RoPE on q and k (read and written) and the token's K/V written to the cache."""
    m = d.model
    heads = m.num_attention_heads / d.tp
    rotated = (heads + 1) * m.qk_rope_head_dim if m.is_mla else (heads + d.kv_heads_per_gpu) * m.head_dim
    return 2 * rotated * ACT_BYTES + d.kv_bytes_per_token_layer()


def _activation_bytes_per_token(d: Deployment, is_moe: bool) -> float:
    """SiLU(gate) x up: reads both halves of gate_up's output, writes one (per routed expert copy under MoE)."""
    m = d.model
    if not is_moe:
        return 3 * m.intermediate_size / d.tp * ACT_BYTES
    inter = (m.moe_intermediate_size or m.intermediate_size) * m.num_experts_per_tok
    shared = (m.shared_expert_intermediate_size or (m.moe_intermediate_size or m.intermediate_size)
              * m.num_shared_experts) if m.num_shared_experts else 0
    return 3 * (inter + shared) / d.tp * ACT_BYTES


def _prefill_copies(hw: Hardware, d: Deployment, b: Batch, bucket: int | None, count: int) -> list[OpCost]:
    """A step with prefill tokens moves activations the model does not compute: the varlen attention's output
    is copied into the step's attention buffer, and under piecewise graphs (at token `bucket`) each piece's qkv
    output is copied into the static buffer the eager attention reads (per layer, read and write)."""
    if not b.prefill_tokens or d.model.is_mla:
        return []
    m = d.model
    q_width = m.num_attention_heads / d.tp * m.head_dim
    ops = []
    if d.varlen_prefill:
        ops.append(_elementwise(hw, "attention_out_copy", 2 * b.prefill_tokens * q_width * ACT_BYTES, count, True))
    if bucket:
        qkv_width = q_width + 2 * d.kv_heads_per_gpu * m.head_dim
        ops.append(_elementwise(hw, "piece_copy", 2 * bucket * qkv_width * ACT_BYTES, count, True))
    return ops


def _elementwise(hw: Hardware, name: str, nbytes: float, count: int, graphs: bool) -> OpCost:
    t = nbytes / (hw.bandwidth * hw.memory_efficiency(nbytes))
    return OpCost(name, 0.0, nbytes, max(t, hw.issue_interval_s(graphs)), "memory", count)


def step_ops(hw: HardwareProfile | Hardware, d: Deployment, b: Batch) -> list[OpCost]:
    """Per-operator device costs of one step on one GPU of the slowest pipeline stage (p2p excluded)."""
    hw = prepare(hw)
    m = d.model
    tokens = b.tokens
    if tokens <= 0:
        return []
    bucket = piecewise_bucket(d, b)  # None for decode-only steps, which replay a whole graph
    attended = b
    if bucket:
        tokens = bucket
        if whole_graph(d, b):        # the padding rows attend as one more prompt
            pad = bucket - b.prefill_tokens
            attended = replace(b, prefill_tokens=bucket, prefill_seqs=b.prefill_seqs + 1,
                               prefill_pairs=b.prefill_pairs + pad * (pad + 1) / 2, prefill_kv_tokens=bucket)
    elif graphs_hide_launches(d, b):   # padded rows go through every GEMM (their attention is a no-op)
        tokens = padded_batch(d, tokens)
    h = m.hidden_size
    layer_frac = d.layers_per_stage / m.num_layers
    graphs = True                   # per-kernel floor: the device-side launch (eager issue: step_time_s)
    ops: list[OpCost] = []
    for n, is_moe, window in _layer_groups(m):
        count = max(1, round(n * layer_frac))
        norms = 4 if m.post_norms else 2
        if not norms_folded(d, b):
            ops.append(_elementwise(hw, "norms", norms * tokens * h * ACT_BYTES * 2, count, graphs))
        ops += _projection_ops(hw, d, tokens, count, graphs)
        ops.append(_elementwise(hw, "rope_kv_store", tokens * _rope_store_bytes_per_token(d), count, graphs))
        ops += _attention_ops(hw, d, attended, m.sliding_window if window else None, count)
        ops += _prefill_copies(hw, d, attended, bucket, count)
        ops += _mlp_ops(hw, d, tokens, is_moe, count, graphs)
        ops.append(_elementwise(hw, "activation", tokens * _activation_bytes_per_token(d, is_moe), count, graphs))
        if d.tp > 1:
            t = allreduce_time_s(hw, tokens * h * ACT_BYTES, d.tp)
            ops.append(OpCost("allreduce", 0.0, tokens * h * ACT_BYTES, t, "communication", 2 * count))
    ops.append(_elementwise(hw, "embedding", tokens * h * ACT_BYTES * 2, 1, graphs))
    # Logits only for sequences that sample this step (decodes and prefills that end their prompt).
    ops.append(gemm_cost(hw, "lm_head", max(1, b.seqs if b.prefill_tokens else tokens), m.vocab_size / d.tp, h,
                         "bf16", 1, graphs))
    return ops


def padded_batch(d: Deployment, n: int) -> int:
    """The captured graph size a decode batch of n runs at (n itself beyond the largest)."""
    i = bisect_left(d.graph_batch_sizes, n)
    return d.graph_batch_sizes[i] if i < len(d.graph_batch_sizes) else n


def host_overhead_s(hw: Hardware, d: Deployment, b: Batch) -> float:
    """The engine's host work per step: fixed, plus per sequence in the step (more of it when served)."""
    per_seq = hw.e.per_seq_overhead_s + (hw.e.served_per_seq_overhead_s if d.served else 0.0)
    return hw.e.step_overhead_s + per_seq * b.seqs


def piecewise_bucket(d: Deployment, b: Batch) -> int | None:
    """The token bucket a step with prefill tokens runs at under piecewise graphs, or None (eager)."""
    if not (d.cuda_graphs and d.piecewise_sizes and b.prefill_tokens) or d.model.is_moe:
        return None
    i = bisect_left(d.piecewise_sizes, b.tokens)
    return d.piecewise_sizes[i] if i < len(d.piecewise_sizes) else None


def eager_kernels(d: Deployment, b: Batch, priced_kernels: int) -> int:
    """Launches (and the host work around them) the host issues for one stage of a step with prefill tokens:
    under piecewise graphs one graph per layer plus the attention's own launches; eagerly, the layer's kernels,
    an activation quantize before each fp8 linear (4 per dense layer) and the attention's launches."""
    layers = d.layers_per_stage
    if d.varlen_prefill:
        attn = VARLEN_PREFILL_KERNELS + (VARLEN_PREFIX_GATHER_KERNELS if b.prefill_kv_tokens > b.prefill_tokens else 0)
        attn += MIXED_DECODE_KERNELS if b.decode_seqs else 0
    else:
        attn = EAGER_KERNELS_PER_PREFILL_SEQ * b.prefill_seqs + (2 if b.decode_seqs else 0)
    if piecewise_bucket(d, b):
        return layers + 1 + attn * layers
    if COMPUTE_DTYPE.get(d.weight_dtype) == "fp8":
        attn += 4
    return max(KERNELS_PER_LAYER * layers, priced_kernels) + attn * layers


def p2p_time_s(hw: Hardware, d: Deployment, b: Batch) -> float:
    """Activations sent between pipeline stages."""
    if d.pp <= 1:
        return 0.0
    nbytes = b.tokens * d.model.hidden_size * ACT_BYTES
    return (d.pp - 1) * (hw.e.allreduce_alpha_s + nbytes / hw.link_bw)


def raced_buckets(hw: HardwareProfile | Hardware, d: Deployment) -> Deployment:
    """`d` with the buckets the engine's start-up race would keep (model_runner._race_buckets): in turn, while a
    fresh prompt one token above the previous bucket is priced faster on the next than eagerly."""
    hw = prepare(hw)
    if not d.raced_sizes:
        return d
    # Per step on the simulator's hot path: the same Deployment object is looked up by identity first (it is kept
    # alive by its entry); an equal one by its fields (ModelSpec, a pydantic model, is unhashable: by identity).
    same = hw.race_memo.get(id(d))
    if same is not None and same[0] is d:
        return same[1]
    key = (id(d.model),) + tuple(getattr(d, f.name) for f in fields(d) if f.name != "model")
    hit = hw.race_memo.get(key)
    if hit is None or hit.model is not d.model:
        kept = replace(d, raced_sizes=())
        if d.cuda_graphs and d.piecewise_sizes and not d.model.is_moe and d.tp == 1:
            for size in d.raced_sizes:
                b = Batch.of([(kept.piecewise_sizes[-1] + 1, 0)])
                longer = replace(kept, piecewise_sizes=kept.piecewise_sizes + (size,))
                if step_time_s(hw, longer, b) >= step_time_s(hw, kept, b):
                    break
                kept = longer
        hit = hw.race_memo[key] = kept
    hw.race_memo[id(d)] = (d, hit)
    return hit


def step_time_s(hw: HardwareProfile | Hardware, d: Deployment, b: Batch) -> float:
    """Wall time of one engine step: every pipeline stage in turn (eager stages no faster than the host
    issues their kernels), plus host work."""
    hw = prepare(hw)
    if b.tokens <= 0:
        return 0.0
    d = raced_buckets(hw, d)
    ops = step_ops(hw, d, b)
    per_stage = 0.0
    priced = 0
    for o in ops:
        per_stage += o.time_s * o.count
        if o.bound != "communication":
            priced += o.count
    kernels = KERNELS_PER_LAYER - (NORM_KERNELS_PER_LAYER if norms_folded(d, b) else 0)
    per_stage += max(0, kernels * d.layers_per_stage - priced) * hw.e.graph_kernel_overhead_s
    if not graphs_hide_launches(d, b):
        per_stage = max(per_stage, eager_kernels(d, b, priced) * hw.e.kernel_overhead_s)
    device_s, host_s = d.pp * per_stage + p2p_time_s(hw, d, b), host_overhead_s(hw, d, b)
    if not d.async_scheduling:
        return device_s + host_s
    return max(device_s + (1.0 - hw.e.async_hidden_fraction) * host_s, host_s)


def norms_folded(d: Deployment, b: Batch) -> bool:
    """A decode step replaying a graph whose row count the engine runs with the RMSNorms inside its GEMVs."""
    return d.cuda_graphs and b.prefill_tokens == 0 and padded_batch(d, b.tokens) in d.folded_norm_rows


def graphs_hide_launches(d: Deployment, b: Batch) -> bool:
    """Decode-only steps replay a CUDA graph: kernels are issued at the graph rate, not the eager one; so do
    steps of fresh prompts that fit a whole-forward graph."""
    return d.cuda_graphs and (b.prefill_tokens == 0 or whole_graph(d, b))


def whole_graph(d: Deployment, b: Batch) -> bool:
    """A step of at most WHOLE_GRAPH_PREFILLS fresh prompts (no cached prefix) within the piecewise buckets replays
    one graph for its whole forward, attention included; with decodes only on engines that capture such graphs."""
    return (d.whole_graph_prefill and d.varlen_prefill and (b.decode_seqs == 0 or d.whole_graph_mixed)
            and 0 < b.prefill_seqs <= WHOLE_GRAPH_PREFILLS and b.prefill_kv_tokens == b.prefill_tokens
            and (piecewise_bucket(d, b) or math.inf) <= d.whole_graph_max_tokens)


@dataclass
class StepBreakdown:
    ops: list[OpCost]
    total_s: float
    bound_s: dict[str, float] = field(default_factory=dict)

    @property
    def bottleneck(self) -> str:
        return max(self.bound_s, key=self.bound_s.get) if self.bound_s else "overhead"


def step_breakdown(hw: HardwareProfile | Hardware, d: Deployment, b: Batch) -> StepBreakdown:
    """Operators with their shares and the bound that dominates the step (for `plan explain`)."""
    hw = prepare(hw)
    ops = step_ops(hw, d, b)
    total = step_time_s(hw, d, b)
    by_bound: dict[str, float] = {}
    for o in ops:
        by_bound[o.bound] = by_bound.get(o.bound, 0.0) + o.total_s * d.pp
    other = total - sum(by_bound.values())
    if other > 0:
        by_bound["overhead"] = by_bound.get("overhead", 0.0) + other
    return StepBreakdown(ops, total, by_bound)
