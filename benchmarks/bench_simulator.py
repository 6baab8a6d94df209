"""Simulator and planner speed: the figures docs/simulator.md quotes.

1. 10,000 requests (Llama-3.1-8B, H100, 1024 in / 256 out, Poisson at 15 req/s: ~60% of its capacity)
   simulated on one core, cold step-time caches. Target: <= 1 s.
2. `plan recommend --model llama-70b --slo ttft_p90=500ms --slo tpot=50ms --rate 20` over the whole GPU
   catalog, as a subprocess (Python start-up included). Target: <= 5 s wall.

Wall time on a shared machine includes other processes' load, so CPU time (user + sys) is printed too.

    python benchmarks/bench_simulator.py [--repeat 3] [--json-only]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time

RECOMMEND = ["plan", "recommend", "--model", "llama-70b", "--slo", "ttft_p90=500ms", "--slo", "tpot=50ms",
             "--rate", "20", "--json"]


def bench_simulator(repeat: int) -> dict:
    from planner import catalog, simulator
    from planner.schemas import LengthDist, Plan, Workload

    model = catalog.load_model("llama-8b")
    hw = catalog.load_hardware("h100", "datasheet")
    plan = Plan(model=model.name, hardware=hw.name)
    wl = Workload(input_tokens=LengthDist(mean=1024), output_tokens=LengthDist(mean=256), rate_rps=15.0)
    runs = []
    for i in range(repeat):
        simulator._TIMERS.clear()                   # cold caches: every run pays its step-time evaluations
        w0, c0 = time.perf_counter(), time.process_time()
        r = simulator.simulate_workload(model, hw, plan, wl, n_requests=10_000, seed=0)
        runs.append((time.perf_counter() - w0, time.process_time() - c0))
    m = r.metrics()
    return {"name": "simulate 10,000 requests", "target_s": 1.0, "wall_s": min(w for w, _ in runs),
            "cpu_s": min(c for _, c in runs), "steps": r.steps, "completed": m["completed"],
            "p90_ttft_ms": m["p90_ttft_ms"], "p90_tpot_ms": m["p90_tpot_ms"], "stable": m["stable"],
            "setup": "Llama-3.1-8B, 1x H100-SXM bf16, 1024 in / 256 out, Poisson 15 req/s, seed 0"}


def bench_recommend(repeat: int) -> dict:
    runs = []
    doc = {}
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        w0 = time.perf_counter()
        out = subprocess.run(RECOMMEND, capture_output=True, text=True)
        wall = time.perf_counter() - w0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        runs.append((wall, cpu))
        if out.returncode not in (0, 3):
            raise SystemExit(f"{' '.join(RECOMMEND)} failed ({out.returncode}): {out.stderr[-2000:]}")
        doc = json.loads(out.stdout)
    best = doc["ranked"][0] if doc.get("ranked") else None
    return {"name": "plan recommend (all catalog GPUs)", "target_s": 5.0, "wall_s": min(w for w, _ in runs),
            "cpu_s": min(c for _, c in runs), "command": " ".join(RECOMMEND[:-1]),
            "simulated_finalists": doc.get("simulated_finalists"),
            "best_plan": best["plan"] if best else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per benchmark; the fastest is reported")
    ap.add_argument("--json-only", action="store_true")
    args = ap.parse_args()
    results = [bench_simulator(args.repeat), bench_recommend(args.repeat)]
    doc = {"date": dt.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.system()}",
           "load_average": os.getloadavg(), "results": results}
    if not args.json_only:
        print(f"{'benchmark':36} {'wall s':>8} {'cpu s':>8} {'target s':>9}  ok")
        for r in results:
            print(f"{r['name']:36} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['target_s']:9.1f}  "
                  f"{'yes' if r['wall_s'] <= r['target_s'] else 'no (wall)' if r['cpu_s'] <= r['target_s'] else 'no'}")
        print(f"load average during the run: {', '.join(f'{x:.2f}' for x in doc['load_average'])}")
    json.dump(doc, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
