"""Roofline points of one plan: every operator of a prefill step and a decode step, placed by arithmetic
intensity (FLOP/byte) and the FLOP/s the cost model says it attains, under the GPU's ceilings.

The numbers come from planner.api.explain, so the chart shows exactly what the prediction used.
"""
from __future__ import annotations

from dataclasses import dataclass

from planner import api, catalog
from planner.costmodel import COMPUTE_DTYPE
from planner.schemas import HardwareProfile, Plan


@dataclass(frozen=True)
class OpPoint:
    phase: str                  # "prefill" | "decode"
    op: str
    intensity: float            # FLOP / byte
    flops_per_s: float          # attained, per GPU
    bound: str
    share: float                # of the step's time


@dataclass(frozen=True)
class Roofline:
    gpu: str
    profile_kind: str           # datasheet | measured | calibrated
    compute_dtype: str
    peak_flops: float           # datasheet, for the plan's GEMM dtype
    bandwidth: float            # datasheet bytes/s
    derated_flops: float        # peak x the profile's best GEMM efficiency
    derated_bandwidth: float    # bandwidth x the profile's best memory efficiency
    attention_flops: float      # attention runs in bf16 whatever the weights: its own compute roof
    points: list[OpPoint]
    no_flops: list[str]         # operators that only move bytes (norms, all-reduce...): off a log-log chart
    batch: int

    @property
    def ridge(self) -> float:
        return self.peak_flops / self.bandwidth

    def ceiling(self, intensity: float, derated: bool = False) -> float:
        if derated:
            return min(self.derated_flops, intensity * self.derated_bandwidth)
        return min(self.peak_flops, intensity * self.bandwidth)


def _best_efficiency(hw: HardwareProfile, dtype: str) -> tuple[float, float]:
    """The highest compute and bandwidth efficiency the profile allows (its curves' maxima when measured)."""
    e = hw.efficiency
    curve = e.gemm_by_m.get(dtype)
    gemm = max(p.y for p in curve) if curve else e.gemm.get(dtype, e.gemm.get("bf16", 0.8))
    mem = max(p.y for p in e.memory_by_bytes) if e.memory_by_bytes else e.memory
    return gemm, mem


def roofline(plan: Plan | dict, input_tokens: float, output_tokens: float, batch: float = 1,
             profile: str = "auto") -> Roofline:
    """Roofline of `plan` at decode concurrency `batch` (the prediction's operating batch)."""
    p = plan if isinstance(plan, Plan) else Plan.model_validate(plan)
    b = max(1, int(round(batch)))
    x = api.explain(p.model, p.hardware, p.tp, p.pp, p.weight_dtype, p.kv_dtype, b, input_tokens, output_tokens,
                    p.max_num_batched_tokens, max(p.max_num_seqs, b), p.gpu_memory_utilization, profile)
    hw = catalog.load_hardware(p.hardware, profile)
    dtype = COMPUTE_DTYPE[p.weight_dtype]
    gemm_eff, mem_eff = _best_efficiency(hw, dtype)
    points, no_flops = [], []
    for phase, step in (("prefill", x.prefill), ("decode", x.decode)):
        for o in step.ops:
            if o.flops > 0 and o.bytes > 0 and o.time_s > 0:
                points.append(OpPoint(phase, o.name, o.intensity, o.flops / o.time_s, o.bound,
                                      o.total_s / step.total_s if step.total_s else 0.0))
            elif o.name not in no_flops:
                no_flops.append(o.name)
    peak = hw.peak(dtype)
    bw = hw.memory_bandwidth_bytes_per_s
    return Roofline(hw.name, x.profile_kind, dtype, peak, bw, peak * gemm_eff, bw * mem_eff, hw.peak("bf16"), points,
                    no_flops, b)
