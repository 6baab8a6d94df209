"""Why a prompt beside decodes costs what it does: decodes with a prefilled context vs a pretend-cached one.

  python benchmarks/probe_mixed_decodes.py --out $OUT/mixed_decodes.json      # Llama-3.1-8B, bf16

The accuracy grid's mixed points (benchmarks/bench_accuracy.py) give their decodes pretend-cached contexts (blocks
allocated, never written); served runs and bench_prefill_graphs.py decode after real prefills. For each kind and
number of decodes: the median time of `--reps` steps of one fresh prompt beside them, and of decode-only steps.
With `--profile`, also the GPU kernels of three such steps each (torch.profiler: total device time by kernel) and
the host ops by self CPU time (what an eager step above the graph buckets spends issuing them). Prompts are random
ids (served prompts are; one repeated id runs GEMMs faster: engine_probes.py --only rows).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_accuracy import inject_decodes  # noqa: E402

from benchmarks.prompts import random_ids  # noqa: E402

CONTEXT = 1024


def timed_steps(engine, prompt: int | None, reps: int) -> float:
    from backends.engine.config import SamplingParams
    times = []
    for i in range(reps + 2):
        if prompt:
            engine.add_request(random_ids(engine.config.model.vocab_size, prompt), SamplingParams(max_tokens=1, ignore_eos=True))
        t = time.perf_counter()
        engine.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times[2:]) * 1e3


def kernel_table(engine, prompt: int | None, steps: int = 3, top: int = 14) -> tuple[list[dict], list[dict]]:
    """Device time per kernel name over `steps` steps (us per step), the largest first, plus their sum; and host
    ops by self CPU time the same way."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from backends.engine.config import SamplingParams
    cuda = torch.cuda.is_available()      # else (a CPU check of this script) host time by op
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for i in range(steps):
            if prompt:
                engine.add_request(random_ids(engine.config.model.vocab_size, prompt),
                                   SamplingParams(max_tokens=1, ignore_eos=True))
            engine.step()
        if cuda:
            torch.cuda.synchronize()
    events = prof.key_averages()

    def table(value) -> list[dict]:
        rows = [{"kernel": e.key[:90], "calls": e.count // steps, "us": value(e) / steps} for e in events]
        rows = [r for r in rows if r["us"] > 0]
        rows.sort(key=lambda r: -r["us"])
        return [{"kernel": "(all)", "calls": sum(r["calls"] for r in rows), "us": sum(r["us"] for r in rows)}] + rows[:top]
    return (table(lambda e: e.device_time_total) if cuda else []), table(lambda e: e.self_cpu_time_total)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="Llama-3.1-8B")
    p.add_argument("--prompt", type=int, default=1100)
    p.add_argument("--decodes", default="0,16,48,96")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--weight-dtype", default="bf16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--profile", action="store_true", help="kernel tables of a few steps (prefilled decodes only)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    from backends.engine.config import EngineConfig, SamplingParams
    from backends.engine.engine import LLMEngine
    from planner.catalog import load_model

    counts = [int(x) for x in a.decodes.split(",")]
    steps = 2 * (a.reps + 2) + 10     # timed steps, the profiled ones, and slack
    engine = LLMEngine(EngineConfig(model=load_model(a.model), device=a.device, weight_dtype=a.weight_dtype, max_num_seqs=256,
                                    max_num_batched_tokens=8192, max_model_len=8448))
    rows = []
    for kind in ("prefilled", "pretend"):
        for n in counts:
            tag = f"{kind}-{n}-{time.time_ns()}"
            if kind == "pretend":
                inject_decodes(engine, n, CONTEXT, steps, tag)
                ids = [f"{tag}-{k}" for k in range(n)]
            else:
                vocab = engine.config.model.vocab_size
                ids = [engine.add_request(random_ids(vocab, CONTEXT), SamplingParams(max_tokens=steps, ignore_eos=True))
                       for _ in range(n)]
                while not all(r in engine.seqs and engine.seqs[r].num_output_tokens for r in ids):
                    engine.step()
            row = {"kind": kind, "decodes": n, "mixed_ms": timed_steps(engine, a.prompt, a.reps),
                   "decode_ms": timed_steps(engine, None, a.reps) if n else None}
            if a.profile and kind == "prefilled":
                row["mixed_kernels"], row["mixed_host"] = kernel_table(engine, a.prompt)
                row["decode_kernels"], row["decode_host"] = kernel_table(engine, None) if n else (None, None)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if not k.endswith(("_kernels", "_host"))}), flush=True)
            for k in ("mixed_kernels", "mixed_host", "decode_kernels", "decode_host"):
                for r in row.get(k) or []:
                    print(f"  {k} {n:3d} {r['us']:9.1f} us {r['calls']:4d}x {r['kernel']}", flush=True)
            for r in ids:
                engine.abort_request(r)
            while engine.has_unfinished():
                engine.step()
    engine.close()
    a.out.write_text(json.dumps({"model": a.model, "weight_dtype": a.weight_dtype, "prompt": a.prompt, "context": CONTEXT,
                                 "kv_cache": engine.runner.kv_info(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
