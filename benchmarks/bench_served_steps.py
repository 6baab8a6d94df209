"""Engine steps of one prompt beside decodes under a served Poisson load, by the number of decodes.

  python benchmarks/bench_served_steps.py --out $OUT/served_steps.json                 # GPU: Llama-3.1-8B
  python benchmarks/bench_served_steps.py --device cpu --tiny --load-rps 20 --duration-s 3 --out /tmp/s.json

The engine server is started with a step trace and loaded with one Poisson run (1024 in / 128 out at --load of the
planner's predicted capacity, seed 0). Reported: TTFT p50, TPOT p50, and the steps that prefill one prompt beside
decodes: median time by 16-decode bucket and the fitted line (ms at no decodes + ms per decode). On an H200 these
cost ~0.06 ms a decode, twice a decode-only step's share; benchmarks/probe_mixed_decodes.py has it unserved.
(2026-12-02: run with PLAN_ENGINE_SWITCH_INTERVAL_MS 5 and 0.25 for a server GIL switch interval that was tried
and dropped: served_steps_H200.json, the same within 10%.)
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_accuracy import GRID, SERVING, model_spec, predicted_capacity_rps  # noqa: E402

from planner.calibrate import _read_lines  # noqa: E402
from planner.schemas import LengthDist, Plan  # noqa: E402


def mixed_steps(trace: Path, prompt_tokens: int) -> dict:
    """Steps of one `prompt_tokens` prompt beside decodes: median ms by 16-decode bucket, and the fitted slope."""
    steps = _read_lines(trace)                 # the trace reader plan calibrate uses
    rows = [(s["num_decode_seqs"], s["time_s"] * 1e3) for s in steps
            if "time_s" in s and s["prefill_query_lens"] == [prompt_tokens] and s["num_decode_seqs"]]
    by = {}
    for n, t in rows:
        by.setdefault(n // 16 * 16, []).append(t)
    fit = np.polyfit(*zip(*rows), 1) if len({n for n, _ in rows}) > 1 else (float("nan"), float("nan"))
    return {"steps": len(rows), "ms_per_decode": float(fit[0]), "ms_at_0": float(fit[1]),
            "median_ms_by_decodes": {k: round(float(np.median(v)), 3) for k, v in sorted(by.items())}}


def run(args, plan: Plan, vocab_size: int, rate_rps: float) -> dict:
    from backends.harness.bench import BenchOptions, BenchSession, WorkloadOptions
    from backends.harness.runner import LoadConfig
    from backends.harness.servers import ServerOptions

    s = SERVING["tiny" if args.tiny else "gpu"]
    trace = Path(tempfile.mkdtemp(prefix="served-steps-")) / "trace.jsonl"
    trace.write_text(json.dumps({"event": "config"}) + "\n")
    extra = ["--trace", str(trace), *(["--async-scheduling"] if args.async_scheduling else []),
             *(["--num-kv-blocks", "2048"] if args.device == "cpu" else [])]
    opts = BenchOptions(backend="builtin", server=ServerOptions(device=args.device, model=plan.model, extra_args=extra),
                        workload=WorkloadOptions(input_tokens=LengthDist(mean=s["input"]),
                                                 output_tokens=LengthDist(mean=s["output"]),
                                                 vocab_size=min(vocab_size, 32000)))
    with BenchSession(plan, None, opts) as session:
        doc = session.measure(LoadConfig(rate_rps=rate_rps, arrival="poisson", seed=0, warmup_requests=4,
                                         num_requests=max(20, round(rate_rps * args.duration_s)), deadline_s=120.0))
    m = doc.get("metrics") or {}
    return {"status": doc.get("status"), "rate_rps": rate_rps,
            "completed": m.get("completed"), "ttft_p50_ms": m.get("median_ttft_ms"),
            "tpot_p50_ms": m.get("median_tpot_ms"), "output_tok_s": m.get("output_throughput"),
            "mixed": mixed_steps(trace, s["input"])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load", type=float, default=0.85, help="fraction of the planner's predicted capacity")
    p.add_argument("--load-rps", type=float, help="the request rate itself (instead of --load)")
    p.add_argument("--duration-s", type=float, default=30.0, help="seconds of arrivals per run")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="the tiny model (CPU check)")
    p.add_argument("--no-async-scheduling", dest="async_scheduling", action="store_false")
    p.add_argument("--out", type=Path, default=Path("served_steps.json"))
    a = p.parse_args(argv)
    s, g = SERVING["tiny" if a.tiny else "gpu"], GRID["tiny" if a.tiny else "gpu"]
    spec = model_spec(s["model"], a.tiny)
    gpu = None if a.device == "cpu" else __import__("profilers.device", fromlist=["x"]).detect_gpus().catalog_name
    plan = Plan(model="tiny" if a.tiny else spec.name, hardware=gpu or "cpu", max_num_seqs=g["max_num_seqs"],
                max_num_batched_tokens=g["max_num_batched_tokens"], max_model_len=g["max_model_len"])
    rate = a.load_rps or a.load * predicted_capacity_rps(spec, gpu, plan, s["input"], s["output"])
    r = run(a, plan, spec.vocab_size, rate)
    mx = r["mixed"]
    print(f"{r['completed']} requests at {rate:.2f}/s, TTFT p50 {r['ttft_p50_ms']:.1f} ms, TPOT p50 "
          f"{r['tpot_p50_ms']:.2f} ms; {mx['steps']} mixed steps: {mx['ms_at_0']:.2f} ms + "
          f"{mx['ms_per_decode'] * 1e3:.0f} us per decode; by decodes {mx['median_ms_by_decodes']}", flush=True)
    a.out.write_text(json.dumps({"model": spec.name, "gpu": gpu, "async_scheduling": a.async_scheduling,
                                 "load": a.load if a.load_rps is None else None, **r}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
