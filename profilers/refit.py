"""Recompute a measured profile's fitted GEMM and attention fields from its raw `measured.gemm` and
`measured.attention` tables, offline (no GPU):
`python -m profilers.refit hw_profiles/measured/H200.yaml [...]` rewrites the files in place."""
from __future__ import annotations

import sys

from planner.schemas import HardwareProfile
from profilers import fit
from profilers.writer import attention_fractions


def refit(hw: HardwareProfile) -> HardwareProfile:
    measured = hw.measured or {}
    eff = hw.efficiency.model_copy(deep=True)
    rows = measured.get("gemm")
    if rows:
        fit.annotate_gemm(rows, hw.peak_flops, hw.memory_bandwidth_bytes_per_s)
        eff = eff.model_copy(update=fit.gemm_model_fields(rows, hw.memory_bandwidth_bytes_per_s))
    if measured.get("attention"):
        attention_fractions(measured["attention"], hw.peak_flops["bf16"], hw.memory_bandwidth_bytes_per_s, eff)
    return hw.model_copy(update={"efficiency": eff})


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m profilers.refit PROFILE.yaml [...]", file=sys.stderr)
        return 2
    for path in argv:
        refit(HardwareProfile.load(path)).dump(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
