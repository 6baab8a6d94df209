"""The built-in engine at scale: fp8 weights, tensor parallelism, MoE. Dummy weights, decode step times.

  python benchmarks/bench_engine_scale.py --only a --out scale_h200x1.json          # 1 GPU
  python benchmarks/bench_engine_scale.py --tp 4 --out scale_h200x4.json            # b, c on 2 and 4 GPUs
  python benchmarks/bench_engine_scale.py --device cpu --tp 2 --out /tmp/scale.json # tiny shapes, gloo

(a) Llama-3.1-8B shape on 1 GPU: decode step at batch 1 (and 64), bf16 vs fp8 weights (target: fp8 >= 1.7x).
(b) Llama-3.1-70B shape: fp8 at TP=2, and bf16 at TP=4 when 4 GPUs are there.
(c) Mixtral-8x7B shape at TP=2 (bf16).
Decode steps at 1k context, batch 1 and 64, CUDA graphs, median of a few steps, beside the floor
  weight bytes per GPU / copy bandwidth + KV bytes per GPU / copy bandwidth + 2 x layers x all-reduce time,
with the all-reduce of one step's activations ([batch, hidden] bf16) timed by NCCL in a CUDA graph in the same
run. MoE decode under CUDA graphs runs every expert (see backends/engine/moe.py), so its floor counts all
expert weights. Results go to --out as JSON; a markdown table is printed.

Each case runs in its own process (`--case`), under a time limit: a crash, an out-of-memory or a hung NCCL
teardown costs that case only. A TP case that fails with CUDA graphs is retried once eagerly.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from bench_engine import LLAMA_31_8B, copy_bandwidth, decode_batch

from backends.engine import parallel
from backends.engine.config import TINY, EngineConfig
from backends.engine.engine import LLMEngine
from planner.schemas import ModelSpec

LLAMA_31_70B = LLAMA_31_8B.model_copy(update=dict(name="Llama-3.1-70B", hidden_size=8192, num_layers=80,
                                                  num_attention_heads=64, num_kv_heads=8, intermediate_size=28672))
MIXTRAL_8X7B = ModelSpec(name="Mixtral-8x7B", architecture="mixtral", hidden_size=4096, num_layers=32,
                         num_attention_heads=32, num_kv_heads=8, intermediate_size=14336, vocab_size=32000,
                         max_position_embeddings=32768, rope_theta=1e6, num_experts=8, num_experts_per_tok=2)
TINY_MOE = TINY.model_copy(update=dict(name="tiny-moe", architecture="mixtral", num_experts=4, num_experts_per_tok=2))

CTX, BATCHES, STEPS = 1024, (1, 64), 10


def cases(tp: int, cpu: bool) -> dict[str, list[tuple[str, ModelSpec, str, int]]]:
    """section -> [(label, model, weight dtype, tp)]."""
    dense_small, dense_big, moe = (TINY, TINY, TINY_MOE) if cpu else (LLAMA_31_8B, LLAMA_31_70B, MIXTRAL_8X7B)
    big = [("70B fp8 TP=2", dense_big, "fp8", 2)] if tp >= 2 else []
    big += [("70B bf16 TP=4", dense_big, "bf16", 4)] if tp >= 4 else []
    return {"a": [("8B bf16", dense_small, "bf16", 1), ("8B fp8", dense_small, "fp8", 1)],
            "b": big, "c": [("Mixtral-8x7B bf16 TP=2", moe, "bf16", 2)] if tp >= 2 else []}


# --------------------------------------------------------------------------- all-reduce time
def _allreduce_rank(rank: int, size: int, port: int, device_type: str, numels: list[int], queue) -> None:
    device = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    parallel.init(rank, size, port, device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    times = {}
    for n in numels:
        x = torch.zeros(n, dtype=dtype, device=device)
        reps = 20
        for _ in range(3):
            parallel.all_reduce(x)
        if device.type == "cuda":   # as the decode step runs it: inside a CUDA graph
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for _ in range(reps):
                    parallel.all_reduce(x)
            graph.replay()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            graph.replay()
            torch.cuda.synchronize()
        else:
            t0 = time.perf_counter()
            for _ in range(reps):
                parallel.all_reduce(x)
        times[n] = (time.perf_counter() - t0) / reps
    if rank == 0:
        queue.put(times)
    parallel.shutdown()


def allreduce_seconds(tp: int, device_type: str, numels: list[int]) -> dict[int, float]:
    from backends.engine.workers import _free_port
    os.environ.update(parallel.SAFE_ENV)
    ctx = mp.get_context("spawn")
    queue, port = ctx.Queue(), _free_port()
    procs = [ctx.Process(target=_allreduce_rank, args=(r, tp, port, device_type, numels, queue)) for r in range(tp)]
    for p in procs:
        p.start()
    times = queue.get(timeout=300)
    for p in procs:
        p.join(60)
    return times


# --------------------------------------------------------------------------- decode
def bench_case(label, spec, weight_dtype, tp, device, cuda_graphs: bool, allreduce: dict[int, float]) -> dict:
    copy_bw = copy_bandwidth(device)
    blocks = max(BATCHES) * (CTX // 16 + 2) + 16
    t0 = time.perf_counter()
    engine = LLMEngine(EngineConfig(model=spec, device=device.type, weight_dtype=weight_dtype, tp=tp,
                                    max_num_seqs=max(BATCHES), max_num_batched_tokens=2048,
                                    max_model_len=CTX + 64, num_kv_blocks=blocks, seed=0, cuda_graphs=cuda_graphs))
    row = {"case": label, "model": spec.name, "weight_dtype": weight_dtype, "tp": tp, "cuda_graphs": cuda_graphs,
           "copy_bandwidth_bytes_s": copy_bw, "load_and_capture_s": time.perf_counter() - t0}
    try:
        runner = engine.runner
        embed_bytes = spec.vocab_size * spec.hidden_size * runner.dtype.itemsize
        weight_bytes = runner.weights_bytes - (0 if spec.tie_word_embeddings else embed_bytes)
        row["weight_bytes_per_gpu"] = weight_bytes
        row["decode"] = []
        for bs in BATCHES:
            batch, seqs = decode_batch(engine, bs, CTX)
            for _ in range(2):
                runner.run(batch)
            times = []
            for _ in range(STEPS):
                t1 = time.perf_counter()
                runner.run(batch)
                times.append(time.perf_counter() - t1)
            for s in seqs:
                engine.block_manager.free(s)
            step = statistics.median(times)
            kv_bytes = bs * CTX * runner.kv_bytes_per_token()
            reduce_s = 2 * spec.num_layers * allreduce.get(bs * spec.hidden_size, 0.0) if tp > 1 else 0.0
            floor = (weight_bytes + kv_bytes) / copy_bw + reduce_s
            row["decode"].append({"batch": bs, "step_ms": step * 1e3, "floor_ms": floor * 1e3,
                                  "allreduce_ms": reduce_s * 1e3, "floor_over_step": floor / step,
                                  "cuda_graph": runner.last_graph_bs})
    finally:
        engine.close()
    return row


def run_case(args, label: str, allreduce: dict[int, float], eager: bool) -> dict:
    """One case in a child process (see the module docstring)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, __file__, "--case", label, "--case-out", out.name, "--device", args.device,
               "--tp", str(args.tp), "--allreduce", json.dumps(allreduce)] + (["--eager"] if eager else [])
        try:
            proc = subprocess.run(cmd, check=False, timeout=args.case_timeout, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        except subprocess.TimeoutExpired:
            return {"case": label, "error": f"timed out after {args.case_timeout} s"}
        if proc.returncode:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            return {"case": label, "error": f"exit {proc.returncode}: {last[:200]}"}
        return json.loads(Path(out.name).read_text())


def markdown(results: dict) -> str:
    lines = [f"## Engine at scale on {results['device_name']} (copy {results['copy_bandwidth_bytes_s'] / 1e12:.2f} "
             f"TB/s, context {CTX})", "",
             "| case | batch | step ms | floor ms | of which all-reduce ms | floor/step | load+capture s |",
             "|---|---|---|---|---|---|---|"]
    for row in results["cases"]:
        if "error" in row:
            lines.append(f"| {row['case']} | | error: {row['error']} | | | | |")
            continue
        for d in row["decode"]:
            lines.append(f"| {row['case']} | {d['batch']} | {d['step_ms']:.2f} | {d['floor_ms']:.2f} | "
                         f"{d['allreduce_ms']:.3f} | {d['floor_over_step']:.2f} | {row['load_and_capture_s']:.0f} |")
    for row in results["cases"]:
        if not row.get("cuda_graphs", True):
            note = f" (CUDA graphs failed: {row['graph_error']})" if "graph_error" in row else ""
            lines.append(f"\n{row['case']}: eager, no CUDA graphs{note}")
    if "fp8_speedup_batch1" in results:
        lines += ["", f"(a) fp8 / bf16 decode speed-up at batch 1: {results['fp8_speedup_batch1']:.2f}x "
                      "(target >= 1.7x)"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tp", type=int, default=None, help="GPUs to use (default: all visible)")
    ap.add_argument("--only", default="a,b,c", help="sections, e.g. a or b,c")
    ap.add_argument("--device", default="cuda", help="cuda | cpu (cpu: tiny shapes, to check the script)")
    ap.add_argument("--out", default="bench_engine_scale.json")
    ap.add_argument("--eager", action="store_true", help="no CUDA graphs")
    ap.add_argument("--case-timeout", type=int, default=240, help="seconds per case")
    ap.add_argument("--case", help=argparse.SUPPRESS)          # internal: run one case in this process
    ap.add_argument("--case-out", help=argparse.SUPPRESS)
    ap.add_argument("--allreduce", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = torch.device(args.device)
    args.tp = args.tp or (torch.cuda.device_count() if device.type == "cuda" else 2)
    all_cases = cases(args.tp, device.type == "cpu")
    if args.case:
        label, spec, weight_dtype, tp = next(c for section in all_cases.values() for c in section if c[0] == args.case)
        allreduce = {int(k): v for k, v in json.loads(args.allreduce).items()}
        row = bench_case(label, spec, weight_dtype, tp, device, not args.eager, allreduce)
        Path(args.case_out).write_text(json.dumps(row))
        os._exit(0)          # skip interpreter teardown: the NCCL groups are gone with the process
    todo = [c for section in args.only.split(",") for c in all_cases[section.strip()]]

    # No CUDA in this process: every GPU is free for the cases.
    results = {"torch": torch.__version__, "tp_available": args.tp, "context": CTX, "cases": []}
    allreduce_times = {}
    for size in sorted({c[3] for c in todo if c[3] > 1}):
        hidden = sorted({c[1].hidden_size for c in todo if c[3] == size})
        allreduce_times[size] = allreduce_seconds(size, device.type, [b * h for b in BATCHES for h in hidden])
    results["allreduce_s"] = {str(k): {str(n): t for n, t in v.items()} for k, v in allreduce_times.items()}
    for label, spec, weight_dtype, case_tp in todo:
        print(f"-- {label}", file=sys.stderr, flush=True)
        row = run_case(args, label, allreduce_times.get(case_tp, {}), args.eager)
        if "error" in row and case_tp > 1 and not args.eager:
            print(f"   {row['error']}; retrying without CUDA graphs", file=sys.stderr, flush=True)
            graph_error = row["error"]
            row = run_case(args, label, allreduce_times.get(case_tp, {}), eager=True)
            row["graph_error"] = graph_error
        results["cases"].append(row)
    ok = [r for r in results["cases"] if "decode" in r]
    results["copy_bandwidth_bytes_s"] = ok[0]["copy_bandwidth_bytes_s"] if ok else 0.0
    results["device_name"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", "0"], check=False, capture_output=True,
        text=True).stdout.strip() if device.type == "cuda" else "cpu"
    by_case = {r["case"]: r for r in results["cases"] if "decode" in r}
    if "8B bf16" in by_case and "8B fp8" in by_case:
        results["fp8_speedup_batch1"] = by_case["8B bf16"]["decode"][0]["step_ms"] / by_case["8B fp8"]["decode"][0]["step_ms"]
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(markdown(results))


if __name__ == "__main__":
    main()
