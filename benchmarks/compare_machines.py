"""The same step points measured on two machines: per model and weight dtype, how much faster or slower the second
ran each point (measured B / measured A - 1), from two `bench_accuracy.py` output directories. Machines of one GPU
type differ; a calibration fitted on one machine carries its quirks to the others.

  python benchmarks/compare_machines.py benchmarks/results/accuracy/H200-grid16 benchmarks/results/accuracy/H200-grid19
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy_report import trace  # noqa: E402

from planner import calibrate as cal  # noqa: E402


def step_times(directory: Path) -> dict[tuple[str, str, str], float]:
    """{(model, weight dtype, point label): seconds} of a directory's step trace (as the calibration reads it)."""
    return {(p.deployment.model.name, p.deployment.weight_dtype, p.group.rsplit(":", 1)[-1]): p.time_s
            for p in cal.load_trace(trace(directory, "step_trace.jsonl")) if cal.excluded_why(p) is None}


def compare(a: Path, b: Path) -> list[str]:
    ta, tb = step_times(a), step_times(b)
    by: dict[tuple[str, str], list[tuple[str, float]]] = {}
    for key in sorted(ta.keys() & tb.keys()):
        by.setdefault(key[:2], []).append((key[2], tb[key] / ta[key] - 1))
    lines = [f"{b.name} against {a.name}: measured / measured - 1 per point", "",
             "| model | points | median | decode points: min .. max | every point |", "|---|---|---|---|---|"]
    for (model, dtype), rows in by.items():
        decode = [r for label, r in rows if label.startswith("decode")]
        span = f"{min(decode):+.0%} .. {max(decode):+.0%}" if decode else "-"
        lines.append(f"| {model} {dtype} | {len(rows)} | {np.median([r for _, r in rows]):+.1%} | {span} | "
                     + " ".join(f"{label} {r:+.0%}" for label, r in rows) + " |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="the reference machine's directory")
    p.add_argument("b", type=Path, help="the other machine's directory")
    args = p.parse_args(argv)
    print("\n".join(compare(args.a, args.b)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
