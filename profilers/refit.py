"""Recompute a measured profile's fitted GEMM fields from its raw `measured.gemm` table, offline (no
GPU): `python -m profilers.refit hw_profiles/measured/H200.yaml [...]` rewrites the files in place."""
from __future__ import annotations

import sys

from planner.schemas import HardwareProfile
from profilers import fit


def refit(hw: HardwareProfile) -> HardwareProfile:
    rows = (hw.measured or {}).get("gemm")
    if not rows:
        return hw
    fit.annotate_gemm(rows, hw.peak_flops, hw.memory_bandwidth_bytes_per_s)
    fields = fit.gemm_model_fields(rows, hw.memory_bandwidth_bytes_per_s)
    return hw.model_copy(update={"efficiency": hw.efficiency.model_copy(update=fields)})


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m profilers.refit PROFILE.yaml [...]", file=sys.stderr)
        return 2
    for path in argv:
        refit(HardwareProfile.load(path)).dump(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
