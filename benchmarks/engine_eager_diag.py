"""Eager (prefill and mixed) steps of the built-in engine on a GPU: first-use stalls and where the host time goes.

  python benchmarks/engine_eager_diag.py --out eager_diag.json        # Llama-3.1-8B shape, dummy bf16

(1) Chunked prefill: prompts longer than the token budget, so steps carry a chunk after a cached prefix; every
step's time, the first chunked step beside the later ones (a first-use stall shows as an outlier).
(2) Lone short prefills (128 and 512 tokens): wall time beside the GPU time (CUDA events, and the union of the
kernels' intervals), torch.profiler's host ops by self CPU time and its kernels by name.
(3) Prompt lengths never seen before, each prefilled twice: a per-shape plan build (cuDNN SDPA did one per new
sequence length, 0.4-0.9 s) shows as a first step far above the second.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from bench_engine import LLAMA_31_8B

from benchmarks.prompts import random_ids

from backends.engine.config import EngineConfig, SamplingParams
from backends.engine.engine import LLMEngine


def step_all(engine: LLMEngine) -> None:
    while engine.has_unfinished():
        engine.step()


def short_prefill(prefill, n: int, reps: int = 3) -> dict:
    """One prompt of n tokens prefilled alone: wall time, time between CUDA events around it, GPU busy time
    (the union of its kernels' intervals), torch.profiler's host ops by self CPU time and its kernels by name
    (what the cost model prices as the step's device time)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    for _ in range(3):
        prefill(n)
    walls, gpus = [], []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t = time.perf_counter()
        start.record()
        prefill(n)
        end.record()
        end.synchronize()
        walls.append(time.perf_counter() - t)
        gpus.append(start.elapsed_time(end) / 1e3)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            prefill(n)
    spans, kernels = [], {}
    for e in prof.events():
        if e.device_type == DeviceType.CUDA:
            spans.append((e.time_range.start, e.time_range.end))
            k = kernels.setdefault(e.name[:90], [0, 0.0])
            k[0] += 1
            k[1] += e.time_range.elapsed_us()
    busy_us, last = 0.0, float("-inf")
    for a, b in sorted(spans):                  # union of intervals: overlapping kernels count once
        if b > last:
            busy_us += b - max(a, last)
            last = b
    host = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:20]
    return {"tokens": n, "wall_ms": statistics.median(walls) * 1e3, "events_ms": statistics.median(gpus) * 1e3,
            "gpu_busy_ms": busy_us / reps / 1e3,
            "kernels": sorted(({"kernel": k, "calls_per_step": c / reps, "us_per_step": us / reps}
                               for k, (c, us) in kernels.items()), key=lambda r: -r["us_per_step"]),
            "host_ops": [{"op": e.key, "calls_per_step": e.count / reps,
                          "self_cpu_us_per_step": e.self_cpu_time_total / reps} for e in host]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="eager_diag.json")
    ap.add_argument("--budget", type=int, default=2048, help="max_num_batched_tokens")
    args = ap.parse_args()
    trace = Path("/tmp/eager_diag.jsonl")
    trace.unlink(missing_ok=True)
    t0 = time.perf_counter()
    engine = LLMEngine(EngineConfig(model=LLAMA_31_8B, device="cuda", max_num_batched_tokens=args.budget,
                                    max_model_len=8448, trace_path=str(trace)))
    vocab = LLAMA_31_8B.vocab_size
    out: dict = {"engine_start_s": time.perf_counter() - t0, "device": torch.cuda.get_device_name(0)}

    # (1) chunked prefills
    for i in range(3):
        engine.add_request(random_ids(vocab, 3000), SamplingParams(max_tokens=2, ignore_eos=True))
    step_all(engine)
    steps = [json.loads(line) for line in trace.read_text().splitlines()]
    chunked = [s for s in steps if any(c > q for q, c in zip(s["prefill_query_lens"], s["prefill_context_lens"]))]
    out["chunked_steps_ms"] = [round(s["time_s"] * 1e3, 2) for s in chunked]
    out["all_steps_ms"] = [round(s["time_s"] * 1e3, 2) for s in steps]

    # (2) lone short prefills: wall vs GPU, host ops, kernels
    def prefill(n: int = 128) -> None:
        engine.add_request(random_ids(vocab, n), SamplingParams(max_tokens=1, ignore_eos=True))
        step_all(engine)

    out["prefills"] = [short_prefill(prefill, n) for n in (128, 512)]
    # (3) new prompt lengths: first and second prefill of each
    new_lengths = []
    for n in (700, 860, 999, 1500, 1777, 333):
        times = []
        for _ in range(2):
            t = time.perf_counter()
            prefill(n)
            times.append(round((time.perf_counter() - t) * 1e3, 2))
        new_lengths.append({"tokens": n, "first_ms": times[0], "second_ms": times[1]})
    out["new_lengths"] = new_lengths
    engine.close()
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"engine start {out['engine_start_s']:.1f} s; chunked steps ms: {out['chunked_steps_ms']}")
    print(f"all steps ms: {out['all_steps_ms']}")
    print("new prompt lengths (first / second prefill, ms): " +
          ", ".join(f"{r['tokens']}: {r['first_ms']}/{r['second_ms']}" for r in out["new_lengths"]))
    for p in out["prefills"]:
        print(f"\nprefill {p['tokens']}: wall {p['wall_ms']:.2f} ms, between events {p['events_ms']:.2f} ms, "
              f"GPU busy {p['gpu_busy_ms']:.2f} ms")
        print("| kernel | calls/step | us/step |\n|---|---|---|")
        for k in p["kernels"][:25]:
            print(f"| {k['kernel'][:70]} | {k['calls_per_step']:.0f} | {k['us_per_step']:.0f} |")
        print("| host op | calls/step | self CPU us/step |\n|---|---|---|")
        for e in p["host_ops"][:12]:
            print(f"| {e['op'][:60]} | {e['calls_per_step']:.0f} | {e['self_cpu_us_per_step']:.0f} |")


if __name__ == "__main__":
    main()
