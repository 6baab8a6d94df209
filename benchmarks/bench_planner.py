"""Planner speed: `plan recommend` wall time (whole process, all catalog GPUs) and cost-model steps/s.

    python benchmarks/bench_planner.py [--repeat 5] [--json out.json]

Targets (issue: core planner): recommend <= 3 s wall on a 2-core machine; >= 10,000 steps/s.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time

from planner import catalog
from planner.costmodel import Batch, Deployment, prepare, step_time_s

RECOMMEND = ["recommend", "--model", "llama-70b", "--slo", "ttft=200ms", "--json"]


def recommend_wall_s(repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "planner.cli", *RECOMMEND], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def steps_per_s(n: int = 20_000, seed: int = 0) -> float:
    """Random step compositions (0-2048 prefill tokens beside 1-256 decodes at 128-8k context) of
    llama-70b at TP 4 on the measured H200 profile, each step costed from scratch."""
    rng = random.Random(seed)
    hw = prepare(catalog.load_hardware("h200"))
    d = Deployment(catalog.load_model("llama-70b"), tp=4)
    batches = []
    for _ in range(n):
        pf, dec, ctx = rng.choice([0, rng.randint(1, 2048)]), rng.randint(1, 256), rng.randint(128, 8192)
        batches.append(Batch(pf, 1 if pf else 0, pf * (ctx + pf / 2), ctx + pf, dec, dec * ctx))
    t0 = time.perf_counter()
    for b in batches:
        step_time_s(hw, d, b)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    walls = recommend_wall_s(a.repeat)
    sps = steps_per_s()
    res = {"recommend_wall_s_median": statistics.median(walls), "recommend_wall_s": walls,
           "cost_model_steps_per_s": sps, "machine": f"{platform.machine()} {os.cpu_count()} cores",
           "load_avg": os.getloadavg(), "python": platform.python_version(),
           "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    print("| benchmark | result | target |\n|---|---|---|")
    print(f"| `plan {' '.join(RECOMMEND)}` wall (median of {a.repeat}) | {res['recommend_wall_s_median']:.2f} s "
          f"| <= 3 s |")
    print(f"| cost model steps/s (20k random step compositions, llama-70b TP4, H200) | {sps:,.0f} | >= 10,000 |")
    print(f"load average during the run: {res['load_avg']}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
