"""Held-out validation: the cost model's predictions for the GEMMs and copies a profile run measured
off its grids (measured.holdout) against what was measured. `python -m profilers.validate PROFILE.yaml`
prints the markdown table."""
from __future__ import annotations

import statistics
import sys
from typing import Callable

from planner.schemas import HardwareProfile
from profilers.errors import ProfilerError


def _costmodel_function(name: str) -> Callable:
    try:
        from planner import costmodel
    except ImportError:
        raise ProfilerError("planner.costmodel is missing: cannot validate the profile") from None
    fn = getattr(costmodel, name, None)
    if fn is None:
        raise ProfilerError(f"planner.costmodel.{name} is missing: cannot validate the profile")
    return fn


def holdout_errors(hw: HardwareProfile) -> list[dict]:
    """One row per held-out point: what, measured and predicted seconds, relative error (pred/meas - 1)."""
    holdout = (hw.measured or {}).get("holdout")
    if not holdout:
        raise ProfilerError(f"profile {hw.name} has no measured.holdout: profile again with holdout enabled")
    gemm_time_s, copy_time_s = _costmodel_function("gemm_time_s"), _costmodel_function("copy_time_s")
    rows = []
    for g in holdout.get("gemm", []):
        predicted = gemm_time_s(hw, g["m"], g["n"], g["k"], g["dtype"])
        rows.append({"kind": "gemm", "point": f"{g['dtype']} M={g['m']} N={g['n']} K={g['k']}",
                     "measured_s": g["seconds"], "predicted_s": predicted})
    for c in holdout.get("copy", []):
        # copy_time_s takes the bytes a copy kernel moves, read plus write, like memory_by_bytes.
        predicted = copy_time_s(hw, c["bytes_moved"])
        rows.append({"kind": "copy", "point": f"{c['copy_bytes'] / 2**20:g} MiB copy",
                     "measured_s": c["seconds"], "predicted_s": predicted})
    for row in rows:
        row["error"] = row["predicted_s"] / row["measured_s"] - 1.0
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| kind | point | measured (us) | predicted (us) | error |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['kind']} | {r['point']} | {r['measured_s'] * 1e6:.1f} | {r['predicted_s'] * 1e6:.1f} | "
              f"{r['error'] * 100:+.1f}% |" for r in rows]
    if rows:
        median = statistics.median(abs(r["error"]) for r in rows)
        lines.append(f"\nmedian absolute error: {median * 100:.1f}% "
                     f"over {len(rows)} held-out points")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Exit 0 with the table; 2 with one line when the file is missing, malformed, not a profile or has no
    held-out points (a usage error, as in `plan`); `-h` prints the usage."""
    import argparse

    from pydantic import ValidationError

    from planner.errors import PlanError, validation_problem
    from planner.parse import read_data_file

    parser = argparse.ArgumentParser(prog="python -m profilers.validate",
                                     description="The cost model against a profile's held-out points "
                                                 "(measured.holdout): one markdown row per point.")
    parser.add_argument("profile", help="a measured profile, e.g. hw_profiles/measured/H200.yaml")
    path = parser.parse_args(argv).profile          # a wrong argument count: usage and exit 2
    try:
        data = read_data_file(path, "profile")
        if not isinstance(data, dict):
            raise ProfilerError(f"profile {path} holds no profile (a mapping with name:, memory_bytes:, ...)")
        print(markdown(holdout_errors(HardwareProfile.model_validate(data))))
    except ValidationError as exc:
        print(f"error: invalid profile {path}: {validation_problem(exc)}", file=sys.stderr)
        return 2
    except PlanError as exc:                        # UsageError (the file) and ProfilerError (its content)
        print(f"error: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
