"""Lone prefills with and without the whole-forward graph (PLAN_ENGINE_WHOLE_GRAPH), A/B on one GPU.

  python benchmarks/bench_prefill_graphs.py --out prefill_graphs.json        # Llama-3.2-1B and -3.1-8B, bf16

For each model and each setting, one engine in its own process (the switch is read at start-up): a prompt of
each length prefilled alone, `--reps` times after two warm-ups, the engine step timed by the host
(`engine.step()`, which waits for the GPU: what a lone request's TTFT pays inside the engine). The two settings
alternate per model, so a slow phase of the machine does not land on one of them only.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = {"1b": "Llama-3.2-1B", "8b": "Llama-3.1-8B"}


def measure(model: str, lengths: list[int], reps: int) -> dict:
    """Child: median step time (s) of a lone prefill per length, and whether the engine had the graphs."""
    from backends.engine.config import EngineConfig, SamplingParams
    from backends.engine.engine import LLMEngine
    from planner.catalog import load_model

    engine = LLMEngine(EngineConfig(model=load_model(MODELS[model]), max_num_batched_tokens=max(lengths),
                                    max_num_seqs=8, max_model_len=max(lengths) + 64))
    out = {"whole_graph_prefill": engine.runner.kv_info()["whole_graph_prefill"], "median_s": {}, "whole": {}}
    params = SamplingParams(max_tokens=1, ignore_eos=True)
    for n in lengths:
        times = []
        for i in range(reps + 2):
            engine.add_request([1 + i % 7] * n, params)
            t = time.perf_counter()
            while engine.has_unfinished():
                engine.step()
            times.append(time.perf_counter() - t)
        out["median_s"][str(n)] = statistics.median(times[2:])
        out["whole"][str(n)] = engine.runner.last_whole_graph
    engine.close()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="1b,8b")
    p.add_argument("--lengths", default="16,128,512,1024,2048")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2, help="on/off pairs per model")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    lengths = [int(x) for x in a.lengths.split(",")]
    if a.child:
        print(json.dumps(measure(a.child, lengths, a.reps)))
        return 0
    runs = []
    for model in a.models.split(","):
        for r in range(a.rounds):
            for whole in ("1", "0"):
                proc = subprocess.run([sys.executable, __file__, "--child", model, "--lengths", a.lengths,
                                       "--reps", str(a.reps), "--out", str(a.out)], capture_output=True, text=True,
                                      env={**os.environ, "PLAN_ENGINE_WHOLE_GRAPH": whole}, timeout=600)
                if proc.returncode:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    return 1
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                runs.append({"model": MODELS[model], "round": r, "switch": whole, **res})
                cells = "  ".join(f"{n}: {s * 1e3:.2f} ms" for n, s in res["median_s"].items())
                print(f"{MODELS[model]} whole graph {'on ' if whole == '1' else 'off'} (round {r}): {cells}",
                      flush=True)
    import torch
    a.out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "date": time.strftime("%Y-%m-%d"),
                                 "command": " ".join(sys.argv), "lengths": lengths, "reps": a.reps, "runs": runs},
                                indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
