"""Prefill steps with and without the whole-forward graphs (PLAN_ENGINE_WHOLE_GRAPH), A/B on one GPU.

  python benchmarks/bench_prefill_graphs.py --out prefill_graphs.json        # Llama-3.2-1B and -3.1-8B, bf16

For each model and each setting, one engine in its own process (the switch is read at start-up): a prompt of
each length prefilled alone, and beside `--decodes` sequences decoding at a 1k context (a mixed step: what a
request arriving at a busy server pays), `--reps` times after two warm-ups, the engine step timed by the host
(`engine.step()`, which waits for the GPU). The two settings alternate per model, so a slow phase of the machine
does not land on one of them only. Also recorded: the engine's graph capture time at start-up.
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


CONTEXT = 1024          # the decoding sequences' context
DEVICE: dict = {}       # EngineConfig's device (a CPU check of this script sets it)


def measure(model: str, lengths: list[int], decodes: list[int], reps: int) -> dict:
    """Child: median step time (s) per number of decodes beside the prompt and prompt length, and whether the
    step replayed a whole-forward graph."""
    from backends.engine.config import EngineConfig, SamplingParams
    from backends.engine.engine import LLMEngine
    from benchmarks.prompts import random_ids
    from planner.catalog import load_model

    most = max(decodes)
    steps = len(lengths) * (reps + 2)
    engine = LLMEngine(EngineConfig(model=load_model(MODELS[model]), max_num_batched_tokens=max(lengths) + most,
                                    max_num_seqs=max(8, most + 1), max_model_len=max(max(lengths), CONTEXT + steps) + 64,
                                    **DEVICE))
    kv = engine.runner.kv_info()
    out = {k: kv.get(k) for k in ("whole_graph_prefill", "whole_graph_mixed", "graph_capture_s")}
    out |= {"median_s": {}, "whole": {}}
    one = SamplingParams(max_tokens=1, ignore_eos=True)
    vocab = engine.config.model.vocab_size
    for d in decodes:
        # d sequences decoding at CONTEXT tokens for the whole sweep (their prefills are not timed)
        busy = [engine.add_request(random_ids(vocab, CONTEXT), SamplingParams(max_tokens=steps + 2, ignore_eos=True))
                for _ in range(d)]
        while not all(r in engine.seqs and engine.seqs[r].num_output_tokens for r in busy):   # until they decode
            engine.step()
        for n in lengths:
            times = []
            for i in range(reps + 2):
                engine.add_request(random_ids(vocab, n), one)
                t = time.perf_counter()
                engine.step()
                times.append(time.perf_counter() - t)
                if not d:
                    while engine.has_unfinished():
                        engine.step()
            out["median_s"][f"{d}+{n}"] = statistics.median(times[2:])
            out["whole"][f"{d}+{n}"] = engine.runner.last_whole_graph
        for r in busy:
            engine.abort_request(r)
        while engine.has_unfinished():
            engine.step()
    engine.close()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="1b,8b")
    p.add_argument("--lengths", default="16,128,512,1024,2048")
    p.add_argument("--decodes", default="0,16", help="sequences decoding beside the prompt, one sweep each")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2, help="on/off pairs per model")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    lengths = [int(x) for x in a.lengths.split(",")]
    if a.child:
        print(json.dumps(measure(a.child, lengths, [int(x) for x in a.decodes.split(",")], a.reps)))
        return 0
    runs = []
    for model in a.models.split(","):
        for r in range(a.rounds):
            for whole in ("1", "0"):
                proc = subprocess.run([sys.executable, __file__, "--child", model, "--lengths", a.lengths,
                                       "--decodes", a.decodes, "--reps", str(a.reps), "--out", str(a.out)],
                                      capture_output=True, text=True,
                                      env={**os.environ, "PLAN_ENGINE_WHOLE_GRAPH": whole}, timeout=600)
                if proc.returncode:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    return 1
                res = json.loads(proc.stdout.strip().splitlines()[-1])
                runs.append({"model": MODELS[model], "round": r, "switch": whole, **res})
                cells = "  ".join(f"{n}: {s * 1e3:.2f}" for n, s in res["median_s"].items())
                print(f"{MODELS[model]} whole graph {'on ' if whole == '1' else 'off'} (round {r}, capture "
                      f"{res['graph_capture_s']:.1f} s), ms by decodes+prompt: {cells}", flush=True)
    import torch
    a.out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "date": time.strftime("%Y-%m-%d"),
                                 "command": " ".join(sys.argv), "lengths": lengths, "decodes": a.decodes, "reps": a.reps,
                                 "runs": runs},
                                indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
