"""Carry a profile's measured collectives (the raw all-reduce runs of a multi-GPU session, refitted) into a
profile measured on one GPU, which has none: `python benchmarks/merge_collectives.py FROM.yaml INTO.yaml`
rewrites INTO."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner.schemas import HardwareProfile  # noqa: E402
from profilers.writer import with_collectives  # noqa: E402


def main(src: str, dst: str) -> int:
    collectives = (HardwareProfile.load(src).measured or {}).get("collectives") or {}
    if not collectives.get("runs"):
        print(f"{src}: no measured collective runs", file=sys.stderr)
        return 2
    with_collectives(HardwareProfile.load(dst), collectives["runs"], collectives.get("provenance", {})).dump(dst)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
