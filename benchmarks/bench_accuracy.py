"""Measured data for the cost model's accuracy report and for `plan calibrate`: the built-in engine on a grid.

  python benchmarks/bench_accuracy.py --out-dir $OUT --gpu-budget-s 240                 # H200 x4: TP 1, 2, 4
  python benchmarks/bench_accuracy.py --out-dir $OUT --gpu-budget-s 240 --tp 1          # H100 x1
  python benchmarks/bench_accuracy.py --device cpu --tiny --out-dir /tmp/acc            # tiny shapes, checks the script

Serving level (first, one model on GPU 0): the engine server (subprocess, `--trace`) loaded by the harness with
Poisson arrivals at 30/60/80/90% of the planner's predicted capacity, 1024 in / 128 out, each run about
`run_s` seconds of arrivals (at least `requests`): 300 Poisson arrivals put the realised rate within +-6%
(one sigma) of the nominal one, and near capacity queueing magnifies that into tens of percent of TTFT.
Each run keeps its per-request TTFT / TPOT / E2E and send time (no ITLs) for per-request comparison.
Step level: one engine per (model, weight dtype, TP), each in its own process under a time limit (a crash, an
out-of-memory or a hung NCCL teardown costs that case only), dummy weights made on the GPU, KV cache sized from
memory as vLLM does. Through `LLMEngine.step()`: lone prefills of a few lengths, and decode steps of (batch,
context) points whose contexts are pretend-cached (blocks allocated, nothing computed), so a 256 x 8k point
costs a few steps, not a 2M-token prefill. Every step is traced; the trace is the calibration data.
`--gpu-budget-s`: no new case or point starts after it; what was measured is saved after every case.

Files in --out-dir (the device tool returns at most 8): step.json, step_trace.jsonl, serving.json,
serving_trace.jsonl (the predicted runs), serving_fit_trace.jsonl (the calibration run's steps).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.prompts import random_ids  # noqa: E402
from planner.schemas import LengthDist, ModelSpec, Plan, Workload  # noqa: E402

MODELS = {"1b": "Llama-3.2-1B", "8b": "Llama-3.1-8B", "14b": "Qwen2.5-14B", "70b": "Llama-3.1-70B"}
# (model key, weight dtype, tp), most valuable first: the budget cuts the tail.
# A 70B shape fits one 141 GB GPU in fp8 (72 GB of weights), so one-GPU machines measure it too.
CASES = [("8b", "bf16", 1), ("8b", "fp8", 1), ("1b", "bf16", 1), ("14b", "bf16", 1), ("70b", "fp8", 2),
         ("70b", "bf16", 4), ("14b", "fp8", 1), ("8b", "bf16", 2), ("14b", "bf16", 4), ("1b", "fp8", 1),
         ("70b", "fp8", 1)]
GRID = {  # prefill lengths, decode (batch, context) points, mixed points, steps per point, engine limits
    # Decode batches off the graph sizes run padded to the next one; mixed points are (prompt length, prompts
    # per step, decoding sequences, their context): the eager steps continuous batching makes under load.
    "gpu": dict(prefill=[128, 512, 1024, 2048, 4096, 8192],
                # (80, 1024): the batch-128 graph with fewer real decodes, which served runs under load make most
                decode=[(1, 128), (1, 8192), (3, 1024), (8, 1024), (12, 2048), (32, 2048), (48, 1024), (64, 1024),
                        (80, 1024), (96, 2048), (128, 4096), (160, 1024), (256, 1024), (256, 4096)],
                mixed=[(512, 1, 16, 1024), (1024, 1, 48, 1024), (2048, 1, 8, 2048), (256, 4, 64, 1024),
                       (1024, 2, 100, 1024), (2048, 3, 200, 1024)],
                # At least `steps` measured steps (lone prefills) a point, more up to `max_steps` where they are
                # cheap: until `measure_s` of them. A host-bound step (a short prefill, a small model's decode)
                # varies 10-40% from one to the next, so five of them left their median off by up to 20%.
                warmup=2, steps=5, max_steps=31, measure_s=0.15, max_num_seqs=256, max_num_batched_tokens=8192,
                max_model_len=8448),
    "tiny": dict(prefill=[32, 128], decode=[(1, 64), (8, 128), (32, 256)], mixed=[(32, 1, 4, 64), (16, 2, 8, 64)],
                 warmup=1, steps=3, max_steps=6, measure_s=1.0, max_num_seqs=32, max_num_batched_tokens=256,
                 max_model_len=512),
}
# `fit`: one more run first, at another load and seed, whose engine steps are calibration data (its own trace
# file); the `fractions` runs are only ever predicted.
SERVING = {"gpu": dict(model="8b", input=1024, output=128, requests=300, run_s=45.0, fractions=(0.3, 0.6, 0.8, 0.9),
                      fit=0.75),
           "tiny": dict(model="tiny", input=64, output=16, requests=20, run_s=0.0, fractions=(0.3, 0.6, 0.8, 0.9),
                        fit=0.75)}
SAMPLE_KEYS = ("i", "ok", "t_start_s", "ttft_ms", "tpot_ms", "e2el_ms", "output_tokens")
TINY_CPU_RPS = 20.0          # tiny on CPU has no profile to predict its capacity: a fixed load
CASE_TIMEOUT_S = 120         # grace beyond the budget left: a case that hangs (NCCL teardown) is killed


def model_spec(key: str, tiny: bool) -> ModelSpec:
    if tiny:
        from backends.engine.config import TINY
        return TINY
    from planner.catalog import load_model
    return load_model(MODELS[key])


def nvidia_smi() -> tuple[str | None, int]:
    """(GPU name, count) without touching CUDA in this process (its context would shrink the cases' KV)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None, 0
    return (out[0].strip() if out else None), len(out)


# --------------------------------------------------------------------------- one case (child process)
def inject_decodes(engine, batch: int, ctx: int, steps: int, tag: str) -> None:
    """`batch` running sequences with `ctx` tokens (pretend-)cached; each decodes `steps` tokens, then ends."""
    from backends.engine.config import SamplingParams
    from backends.engine.sequence import Sequence, Status

    vocab = engine.config.model.vocab_size
    for i in range(batch):
        seq = Sequence(f"{tag}-{i}", [(7 * i + 1) % vocab] * (ctx + 1), SamplingParams(max_tokens=steps,
                                                                                     ignore_eos=True))
        engine.block_manager.allocate(seq, ctx + 1)
        seq.num_computed_tokens = ctx
        seq.status = Status.RUNNING
        engine.seqs[seq.request_id] = seq
        engine.scheduler.running.append(seq)


def run_steps(engine) -> None:
    while engine.has_unfinished():
        engine.step()


def measure_case(args, spec: ModelSpec, weight_dtype: str, tp: int, trace_path: str, deadline: float) -> dict:
    """Prefill and decode points on one engine; `marks` maps step ranges to points for the trace."""
    import torch

    from backends.engine.config import EngineConfig, SamplingParams
    from backends.engine.engine import LLMEngine

    g = GRID["tiny" if args.tiny else "gpu"]
    cpu = args.device == "cpu"
    cfg = EngineConfig(model=spec, device=args.device, weight_dtype=weight_dtype, tp=tp, seed=0,
                       max_num_seqs=g["max_num_seqs"], max_num_batched_tokens=g["max_num_batched_tokens"],
                       max_model_len=g["max_model_len"], num_kv_blocks=2048 if cpu else None, trace_path=trace_path)
    t0 = time.perf_counter()
    engine = LLMEngine(cfg)
    out = {"kv_cache": engine.runner.kv_info(), "load_s": time.perf_counter() - t0, "points": [], "skipped": [],
           "prompt_ids": "random", "device_name": torch.cuda.get_device_name(0) if not cpu else "cpu",
           "engine": {k: getattr(cfg, k) for k in ("max_num_seqs", "max_num_batched_tokens", "max_model_len",
                                                    "gpu_memory_utilization", "block_size", "cuda_graphs")}}
    marks = []
    def clock() -> tuple[int, float]:
        return engine.stats.num_steps, engine.stats.step_time_sum_s

    def how_many(since: tuple[int, float]) -> int:
        """Measured steps for a point whose warm-up steps ran since `since` (their mean time sets the count)."""
        n, t = clock()
        mean_s = (t - since[1]) / max(1, n - since[0])
        return max(g["steps"], min(g["max_steps"], math.ceil(g["measure_s"] / max(mean_s, 1e-9))))

    def phase(point: dict, warm: int, start, serial: bool = False) -> None:
        """Warm-up then measured steps of one point; `serial`: one request at a time (lone prefills)."""
        since = clock()
        for n, is_warmup in ((warm, True), (None, False)):
            n = n if is_warmup else how_many(since)
            first = engine.stats.num_steps + 1
            for chunk in ([1] * n if serial else [n]):
                start(chunk)
                run_steps(engine)
            marks.append((first, engine.stats.num_steps, point["id"], is_warmup))
        point["steps"] = [first, engine.stats.num_steps]

    try:
        for length in g["prefill"]:
            if time.perf_counter() > deadline:
                out["skipped"].append({"prefill": length, "why": "gpu budget"})
                continue
            point = {"id": f"prefill-{length}", "kind": "prefill", "prompt_len": length}

            def start(n, length=length):
                for _ in range(n):
                    engine.add_request(random_ids(spec.vocab_size, length), SamplingParams(max_tokens=1, ignore_eos=True))
            phase(point, 1, start, serial=True)
            out["points"].append(point)
        def fits(batch: int, ctx: int, prompt_tokens: int = 0) -> str | None:
            """Why the point cannot run on this engine's KV cache, or None."""
            need = batch * -(-(ctx + g["warmup"] + g["max_steps"] + 1) // cfg.block_size) + -(-prompt_tokens // cfg.block_size)
            if need > engine.block_manager.num_free_blocks or ctx + g["warmup"] + g["max_steps"] + 8 > engine.max_model_len:
                return f"needs {need} KV blocks, {engine.block_manager.num_free_blocks} free"
            return None

        for batch, ctx in g["decode"]:
            if why := fits(batch, ctx):
                out["skipped"].append({"batch": batch, "ctx": ctx, "why": why})
                continue
            if time.perf_counter() > deadline:
                out["skipped"].append({"batch": batch, "ctx": ctx, "why": "gpu budget"})
                continue
            point = {"id": f"decode-{batch}x{ctx}", "kind": "decode", "batch": batch, "ctx": ctx}
            phase(point, g["warmup"],
                  lambda n, b=batch, c=ctx, p=point["id"]: inject_decodes(engine, b, c, n, f"{p}-{n}-{time.time_ns()}"))
            out["points"].append(point)
        for length, prompts, batch, ctx in g["mixed"]:
            why = "gpu budget" if time.perf_counter() > deadline else fits(batch, ctx, prompts * length)
            if why:
                out["skipped"].append({"mixed": [length, prompts, batch, ctx], "why": why})
                continue
            point = {"id": f"mixed-{prompts}x{length}+{batch}x{ctx}", "kind": "mixed", "prompt_len": length,
                     "prompts": prompts, "batch": batch, "ctx": ctx}
            # The decodes last as long as the most steps the point may take; those it does not take are cut short.
            tag = f"{point['id']}-{time.time_ns()}"
            inject_decodes(engine, batch, ctx, g["warmup"] + g["max_steps"], tag)
            first, since = engine.stats.num_steps + 1, clock()
            i, n_steps = 0, g["warmup"] + g["max_steps"]
            while i < n_steps:
                # fresh prompts every step (one token each: they finish in the step that prefills them)
                for _ in range(prompts):
                    engine.add_request(random_ids(spec.vocab_size, length), SamplingParams(max_tokens=1, ignore_eos=True))
                engine.step()
                i += 1
                if i == g["warmup"]:
                    marks.append((first, engine.stats.num_steps, point["id"], True))
                    measured_first, n_steps = engine.stats.num_steps + 1, g["warmup"] + how_many(since)
            marks.append((measured_first, engine.stats.num_steps, point["id"], False))
            point["steps"] = [measured_first, engine.stats.num_steps]
            for k in range(batch):
                engine.abort_request(f"{tag}-{k}")
            run_steps(engine)
            out["points"].append(point)
    finally:
        engine.close()
    out["marks"] = marks
    return out


def case_main(args) -> None:
    """Child: one case; writes its result JSON to args.case_out (trace to args.case_out + '.jsonl')."""
    spec = model_spec(args.case_model, args.tiny)
    result = measure_case(args, spec, args.case_dtype, args.case_tp, args.case_out + ".jsonl",
                          time.perf_counter() + args.case_budget_s)
    Path(args.case_out).write_text(json.dumps(result))


def run_case(args, key: str, weight_dtype: str, tp: int, budget_s: float) -> tuple[dict, list[dict]]:
    """(case result, trace records annotated with point ids) from a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        res_path = os.path.join(tmp, "case.json")
        cmd = [sys.executable, __file__, "--case", "--case-model", key, "--case-dtype", weight_dtype,
               "--case-tp", str(tp), "--case-out", res_path, "--case-budget-s", f"{budget_s:.0f}",
               "--device", args.device] + (["--tiny"] if args.tiny else [])
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget_s + CASE_TIMEOUT_S)
            err = proc.stderr
        except subprocess.TimeoutExpired as e:
            proc, err = None, f"timed out after {e.timeout:.0f} s\n{e.stderr or ''}"
        if proc is None or proc.returncode != 0 or not os.path.exists(res_path):
            tail = [ln for ln in (err if isinstance(err, str) else err.decode(errors="replace")).splitlines()
                    if ln.strip()][-6:]
            return {"error": "\n".join(tail) or f"exit {proc.returncode if proc else 'timeout'}",
                    "oom": "out of memory" in (err or "").lower() if isinstance(err, str) else False}, []
        result = json.loads(Path(res_path).read_text())
        trace = [json.loads(ln) for ln in Path(res_path + ".jsonl").read_text().splitlines() if ln.strip()]
    by_step = {}
    for first, last, pid, warm in result.pop("marks"):
        for s in range(first, last + 1):
            by_step[s] = (pid, warm)
    records = []
    for rec in trace:
        pid, warm = by_step.get(rec["step"], (None, True))
        records.append({**rec, "point": pid, "warmup": warm})
    for p in result["points"]:
        first, last = p.pop("steps")
        times = [r["time_s"] for r in records if first <= r["step"] <= last]
        p.update(times_s=times, median_s=statistics.median(times) if times else None)
    return result, records


# --------------------------------------------------------------------------- serving level
def predicted_capacity_rps(spec: ModelSpec, gpu: str | None, plan: Plan, inp: int, out: int) -> float | None:
    try:
        from planner import catalog
        from planner.predict import predict
        hw = catalog.load_hardware(gpu)
        wl = Workload(input_tokens=LengthDist(mean=inp), output_tokens=LengthDist(mean=out))
        return predict(spec, hw, plan, wl).requests_per_s
    except Exception:  # noqa: BLE001 - an unknown GPU falls back to a fixed load
        return None


def serving(args, gpu: str | None, out_dir: Path) -> dict:
    from backends.harness.bench import BenchOptions, BenchSession, WorkloadOptions
    from backends.harness.runner import LoadConfig
    from backends.harness.servers import ServerOptions

    s = SERVING["tiny" if args.tiny else "gpu"]
    g = GRID["tiny" if args.tiny else "gpu"]
    spec = model_spec(s["model"], args.tiny)
    plan = Plan(model="tiny" if args.tiny else spec.name, hardware=gpu or "cpu", max_num_seqs=g["max_num_seqs"],
                max_num_batched_tokens=g["max_num_batched_tokens"], max_model_len=g["max_model_len"])
    capacity = predicted_capacity_rps(spec, gpu, plan, s["input"], s["output"]) if not args.tiny else None
    capacity = capacity or TINY_CPU_RPS
    trace = out_dir / "serving_trace.jsonl"
    trace.write_text(json.dumps({"event": "config", "model": spec.model_dump(mode="json", exclude_none=True),
                                 "tp": 1, "weight_dtype": "bf16", "kv_dtype": "bf16", "served": True}) + "\n")
    log_dir = Path(tempfile.mkdtemp(prefix="acc-serving-"))
    extra = ["--trace", str(trace)] + (["--num-kv-blocks", "2048"] if args.device == "cpu" else []) \
        + (["--async-scheduling"] if args.async_scheduling else [])
    opts = BenchOptions(backend="builtin",
                        server=ServerOptions(device=args.device, model="tiny" if args.tiny else spec.name,
                                             extra_args=extra, log_dir=log_dir),
                        workload=WorkloadOptions(input_tokens=LengthDist(mean=s["input"]),
                                                 output_tokens=LengthDist(mean=s["output"]),
                                                 vocab_size=min(spec.vocab_size, 32000)),
                        command=" ".join(sys.argv))
    doc = {"model_spec": spec.model_dump(mode="json", exclude_none=True), "predicted_capacity_rps": capacity,
           "runs": []}
    with BenchSession(plan, None, opts) as session:
        doc["kv_cache"] = session.server.engine_report()
        # The engine's step features, from what it reported (the config line was written before it started).
        lines = trace.read_text().splitlines(keepends=True)
        trace.write_text("".join([json.dumps({**json.loads(lines[0]), **engine_features(doc["kv_cache"])}) + "\n",
                                  *lines[1:]]))
        fit = session.measure(LoadConfig(rate_rps=s["fit"] * capacity, arrival="poisson", num_requests=s["requests"],
                                         warmup_requests=4, seed=10, deadline_s=120.0))
        doc["fit_run"] = {"load_fraction": s["fit"], "metrics": fit.get("metrics"), "config": fit.get("config")}
        lines = trace.read_text().splitlines(keepends=True)
        (out_dir / "serving_fit_trace.jsonl").write_text("".join([lines[0], *map(bucket_point, lines[1:])]))
        trace.write_text(lines[0])
        for i, frac in enumerate(s["fractions"]):
            rate = frac * capacity
            load = LoadConfig(rate_rps=rate, arrival="poisson", num_requests=max(s["requests"], round(rate * s["run_s"])),
                              warmup_requests=0, seed=i, deadline_s=120.0)
            run = session.measure(load)
            # per-request detail without the ITLs (those would make the file too big for the device tool)
            run["samples"] = [{k: x.get(k) for k in SAMPLE_KEYS} for x in run.get("samples") or []]
            doc["runs"].append({"load_fraction": frac, **run})
    return doc


def bucket_point(line: str) -> str:
    """A served step trace line with a `point` id by composition (kind, 16-sequence decode buckets, 1k-token
    prefill buckets), so the run's thousands of steps become a few dozen median observations."""
    rec = json.loads(line)
    if "step" not in rec:
        return line
    kind = "mixed" if rec["num_prefill_tokens"] and rec["num_decode_seqs"] else (
        "prefill" if rec["num_prefill_tokens"] else "decode")
    rec["point"] = f"served-{kind}-{rec['num_decode_seqs'] // 16}-{rec['num_prefill_tokens'] // 1024}"
    return json.dumps(rec) + "\n"


def engine_features(kv: dict | None) -> dict:
    """How the engine ran its steps (its kv_cache report: graph sizes, prefill path), for the trace's config line."""
    kv = kv or {}
    return {"cuda_graph_batch_sizes": kv.get("cuda_graph_batch_sizes") or [],
            "piecewise_sizes": kv.get("piecewise_sizes") or [], "varlen_prefill": bool(kv.get("varlen_prefill")),
            "whole_graph_prefill": bool(kv.get("whole_graph_prefill")),
            "whole_graph_mixed": bool(kv.get("whole_graph_mixed")), "whole_graph_max_tokens": kv.get("whole_graph_max_tokens"),
            "async_scheduling": bool(kv.get("async_scheduling")),
            **({"fp8_gemv_rows": kv["fp8_gemv_rows"]} if "fp8_gemv_rows" in kv else {}),
            **({"fused_norms": kv["fused_norms"]} if kv.get("fused_norms") else {})}


# --------------------------------------------------------------------------- CPU profile (tiny)
def cpu_profile() -> dict:
    """A synthetic profile for the tiny CPU path: ceilings = copy bandwidth and fp32 matmul rate measured here."""
    import torch

    x = torch.empty(1 << 25, dtype=torch.uint8)
    y = torch.empty_like(x)
    t0 = time.perf_counter()
    for _ in range(5):
        y.copy_(x)
    bw = 2 * x.numel() * 5 / (time.perf_counter() - t0)
    a = torch.randn(512, 512)
    t0 = time.perf_counter()
    for _ in range(5):
        a @ a
    flops = 2 * 512 ** 3 * 5 / (time.perf_counter() - t0)
    return {"name": "CPU-tiny", "memory_bytes": 16e9, "memory_bandwidth_bytes_per_s": bw,
            "peak_flops": {"bf16": flops, "fp8": flops, "fp32": flops},
            "interconnect": {"kind": "shared memory", "bandwidth_bytes_per_s": bw / 4},
            "tdp_w": 100.0, "price_per_gpu_hour": 0.0, "provenance": {"kind": "measured", "gpu": "cpu"}}


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="accuracy_out")
    p.add_argument("--gpu-budget-s", type=float, default=270.0, help="no new case or point after this many s")
    p.add_argument("--only", choices=["step", "serving"])
    p.add_argument("--models", default="1b,8b,14b,70b", help="of " + ",".join(MODELS))
    p.add_argument("--tp", default="1,2,4", help="TP sizes to run (capped by the GPUs visible)")
    p.add_argument("--dtypes", default="bf16,fp8")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="the tiny model for every case (CPU check)")
    p.add_argument("--async-scheduling", action="store_true", help="serve with the engine's async scheduling")
    p.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--case-model", help=argparse.SUPPRESS)
    p.add_argument("--case-dtype", help=argparse.SUPPRESS)
    p.add_argument("--case-tp", type=int, help=argparse.SUPPRESS)
    p.add_argument("--case-out", help=argparse.SUPPRESS)
    p.add_argument("--case-budget-s", type=float, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def selected_cases(args, n_gpus: int) -> list[tuple[str, str, int]]:
    models = set(args.models.split(","))
    tps = {int(t) for t in args.tp.split(",") if int(t) <= max(n_gpus, 1)}
    dtypes = set(args.dtypes.split(","))
    cases = [c for c in CASES if c[0] in models and c[1] in dtypes and c[2] in tps]
    if not args.tiny:
        return cases
    unique = {}             # one tiny model stands in for every shape: one case per (dtype, tp)
    for c in cases:
        unique.setdefault((c[1], c[2]), c)
    return list(unique.values())


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.case:
        case_main(args)
        return 0
    t_start = time.perf_counter()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # On the CPU, TP runs as gloo processes: two are enough to check the path.
    name, n_gpus = nvidia_smi() if args.device == "cuda" else ("cpu", 2)
    from profilers.device import catalog_name
    gpu = catalog_name(name) if name and args.device == "cuda" else None
    meta = {"gpu": gpu, "device_name": name, "device_count": n_gpus, "command": " ".join(sys.argv),
            "date": dt.datetime.now().isoformat(timespec="seconds"), "budget_s": args.gpu_budget_s,
            "tiny": args.tiny, "grid": GRID["tiny" if args.tiny else "gpu"]}
    if args.only != "step":
        try:
            doc = serving(args, gpu, out_dir)
        except Exception as e:  # noqa: BLE001 - the step grid still runs; the error is in the file
            doc = {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
        (out_dir / "serving.json").write_text(json.dumps({"meta": meta, **doc}, indent=1, default=str))
        print(f"serving: {len(doc.get('runs', []))} runs, {time.perf_counter() - t_start:.0f} s", flush=True)
    if args.only == "serving":
        return 0
    step = {"meta": meta, "cases": []}
    if args.tiny:
        step["hardware_profile"] = cpu_profile()
    trace_out = out_dir / "step_trace.jsonl"
    trace_out.write_text("")
    for key, wd, tp in selected_cases(args, n_gpus):
        left = args.gpu_budget_s - (time.perf_counter() - t_start)
        spec = model_spec(key, args.tiny)
        case = {"model": spec.name, "model_key": key, "weight_dtype": wd, "kv_dtype": "bf16", "tp": tp}
        if left <= 0:
            step["cases"].append({**case, "skipped": "gpu budget"})
            continue
        result, records = run_case(args, key, wd, tp, left)
        step["cases"].append({**case, **result})
        with trace_out.open("a") as f:
            f.write(json.dumps({"event": "config", "model": spec.model_dump(mode="json", exclude_none=True),
                                "tp": tp, "weight_dtype": wd, "kv_dtype": "bf16",
                                **engine_features(result.get("kv_cache"))}) + "\n")
            f.writelines(json.dumps(r) + "\n" for r in records)
        (out_dir / "step.json").write_text(json.dumps(step, indent=1, default=str))
        print(f"{spec.name} {wd} TP{tp}: {len(result.get('points', []))} points"
              f"{' ERROR ' + result['error'].splitlines()[-1] if 'error' in result else ''}; "
              f"{time.perf_counter() - t_start:.0f} s", flush=True)
    (out_dir / "step.json").write_text(json.dumps(step, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
