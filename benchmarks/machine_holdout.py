"""A calibration fitted on some machines' data, predicting machines it never saw: what pooling machines buys.

Fits the cost model (`plan calibrate`'s fit: step traces with the default seeded holdout, served fit traces) from the
shipped measured profile on the `--fit` directories, then predicts every step point and served run of each
`--predict` directory, as accuracy_report.py's shipped sections do, and prints the errors (measured / predicted - 1).

  python benchmarks/machine_holdout.py --gpu h200 --fit benchmarks/results/accuracy/H200-grid16 \\
      --predict benchmarks/results/accuracy/H200-grid19
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy_report as report  # noqa: E402

from planner import calibrate as cal  # noqa: E402
from planner import catalog  # noqa: E402


def fitted(gpu: str, dirs: list[Path]):
    traces = [report.trace(d, "step_trace.jsonl") for d in dirs]
    fits = [f for d in dirs if (f := report.trace(d, "serving_fit_trace.jsonl"))]
    return cal.calibrate(catalog.load_hardware(gpu, "measured"), traces, fit_traces=fits).profile


def predicted(profile, directory: Path) -> list[str]:
    lines = []
    steps = report.trace(directory, "step_trace.jsonl")
    if steps:
        points = [p for p in cal.load_trace(steps) if cal.excluded_why(p) is None]
        errors = report.step_errors(profile, points)
        lines += [f"{directory.name} steps: {report.stats(errors)}"] + report.by_model_table(points, errors)
    if (directory / "serving.json").exists():
        summary: dict = {}
        report.serving_section(directory.name, cal.load_runs(directory / "serving.json"), {"calibrated": profile},
                               None, summary)
        lines.append(f"{directory.name} served, median abs error over the loads: " + ", ".join(
            f"{k} {np.median(np.abs(v)):.1%}" for k, v in summary["serving"].items())
            + f"; inside the interval: {sum(summary['inside'])} of {len(summary['inside'])}")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", required=True, help="GPU type of the machines (plan gpus)")
    p.add_argument("--fit", type=Path, nargs="+", required=True, help="directories whose data the calibration fits")
    p.add_argument("--predict", type=Path, nargs="+", required=True, help="directories it predicts")
    args = p.parse_args(argv)
    profile = fitted(args.gpu, args.fit)
    print("fitted on " + ", ".join(d.name for d in args.fit))
    for d in args.predict:
        print("\n".join(predicted(profile, d)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
