"""Carry a profile's measured collectives (the all-reduce curves and fits of a multi-GPU session) into a profile
measured on one GPU, which has none: `python benchmarks/merge_collectives.py FROM.yaml INTO.yaml` rewrites INTO."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.schemas import HardwareProfile  # noqa: E402

FIELDS = ("allreduce_alpha_s", "allreduce_busbw_fraction", "allreduce_by_bytes")


def main(src: str, dst: str) -> int:
    have, into = HardwareProfile.load(src), HardwareProfile.load(dst)
    if not have.efficiency.allreduce_by_bytes:
        print(f"{src}: no measured all-reduce curves", file=sys.stderr)
        return 2
    eff = into.efficiency.model_copy(update={f: getattr(have.efficiency, f) for f in FIELDS})
    measured = {**(into.measured or {}), "collectives": (have.measured or {}).get("collectives")}
    into.model_copy(update={"efficiency": eff, "measured": measured}).dump(dst)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
