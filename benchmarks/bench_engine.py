"""Benchmark of the built-in engine on one GPU (or a tiny model on CPU, to check the script end to end).

  python benchmarks/bench_engine.py --out engine_h200.json              # Llama-3.1-8B shape, dummy bf16
  python benchmarks/bench_engine.py --quick --out engine_h100.json      # fewer sizes and requests
  python benchmarks/bench_engine.py --device cpu --model tiny --out /tmp/engine_cpu.json
  python benchmarks/bench_engine.py --rescore benchmarks/results/engine_int32ctx_H200.json   # a saved run + roofline

Measures (a) device copy bandwidth, (b) decode step time per batch size at a fixed context beside the
bandwidth floor (weights + KV read) / copy bandwidth, (c) one long prefill's TFLOP/s beside a measured GEMM
ceiling, (d) offline throughput of the engine and of Hugging Face `generate` on a subset, (e) a step trace.
All results go to --out as JSON, and a markdown table is printed.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from backends.engine import gemv
from backends.engine.config import EngineConfig, EngineError, SamplingParams, resolve_model
from backends.engine.engine import LLMEngine
from backends.engine.model import build_model
from backends.engine.scheduler import ScheduledBatch
from backends.engine.sequence import Sequence, Status
from planner.schemas import ModelSpec

# Used when the catalog is unavailable.
LLAMA_31_8B = ModelSpec(name="Llama-3.1-8B", hidden_size=4096, num_layers=32, num_attention_heads=32, num_kv_heads=8,
                        intermediate_size=14336, vocab_size=128256, max_position_embeddings=131072,
                        rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                           "high_freq_factor": 4.0,
                                                           "original_max_position_embeddings": 8192})

# sizes: decode batch sizes, decode context, prefill length, offline (requests, in, out), HF (batch, out)
PROFILES = {
    "full": dict(batches=[1, 8, 32, 64, 128, 256], ctx=1024, prefill=8192, offline=(512, 1024, 256), hf=(64, 256),
                 steps=20),
    "quick": dict(batches=[1, 32, 256], ctx=1024, prefill=8192, offline=(256, 1024, 128), hf=(32, 128), steps=10),
    "cpu": dict(batches=[1, 8, 32], ctx=128, prefill=512, offline=(32, 64, 16), hf=(4, 16), steps=5),
}


def now(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def copy_bandwidth(device) -> float:
    """Bytes read + written per second by a large device-to-device copy."""
    n = (1 << 30) if device.type == "cuda" else (1 << 25)
    x = torch.empty(n, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    iters = 20 if device.type == "cuda" else 5
    t0 = now(device)
    for _ in range(iters):
        y.copy_(x)
    seconds = now(device) - t0
    del x, y
    return 2 * n * iters / seconds


def gemm_ceiling(device, dtype) -> float:
    n = 8192 if device.type == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    iters = 20 if device.type == "cuda" else 3
    t0 = now(device)
    for _ in range(iters):
        a @ b
    seconds = now(device) - t0
    return 2 * n ** 3 * iters / seconds


def decode_batch(engine: LLMEngine, batch_size: int, ctx: int, max_tokens: int = 1,
                 running: bool = False) -> tuple[ScheduledBatch, list[Sequence]]:
    """batch_size sequences whose first `ctx` tokens are (pretend-)cached: each step decodes one token at ctx.
    `running`: handed to the engine's scheduler, to decode `max_tokens` tokens through engine.step()."""
    seqs = []
    for i in range(batch_size):
        seq = Sequence(f"decode-{batch_size}-{i}-{running}", [i % 1000] * (ctx + 1),
                       SamplingParams(max_tokens=max_tokens, ignore_eos=True))
        engine.block_manager.allocate(seq, ctx + 1)
        seq.num_computed_tokens = ctx
        if running:
            seq.status = Status.RUNNING
            engine.seqs[seq.request_id] = seq
            engine.scheduler.running.append(seq)
        seqs.append(seq)
    return ScheduledBatch([(s, 1) for s in seqs]), seqs


def engine_decode_s(engine: LLMEngine, batch_size: int, ctx: int, steps: int, async_scheduling: bool) -> float:
    """Median time of engine.step() over `steps` decode steps of a full batch: scheduling, inputs, launch and
    reading the tokens, as served; with async scheduling each call overlaps the next step's host work with the
    GPU's current step, so its time is the interval between completions."""
    engine.async_scheduling = async_scheduling
    warm = 3
    decode_batch(engine, batch_size, ctx, max_tokens=warm + steps + 2, running=True)
    times = []
    for i in range(warm + steps):
        t0 = time.perf_counter()
        engine.step()
        if i >= warm:
            times.append(time.perf_counter() - t0)
    while engine.has_unfinished():
        engine.step()
    engine.async_scheduling = engine.config.async_scheduling
    return statistics.median(times)


def gemm_excess_s(model, rows: int, copy_bw: float, gemm_flops: float) -> float:
    """Seconds by which the model's linears at `rows` rows exceed their weight-byte time when each takes the longer
    of its weight bytes at copy bandwidth and its FLOPs at the measured GEMM ceiling (a roofline per linear): what a
    bytes-only floor leaves out once large batches make the GEMMs compute-bound."""
    weights = [m.weight for m in model.modules() if getattr(m, "scheme", None) is not None]
    return sum(max(0.0, 2 * rows * w.shape[0] * w.shape[1] / gemm_flops - w.numel() * w.element_size() / copy_bw)
               for w in weights)


def roofline_fields(model, rows: int, floor_s: float, async_s: float, copy_bw: float,
                    gemm_flops: float | None) -> dict:
    """The step against the roofline floor: the bytes floor plus gemm_excess_s (None without a GEMM ceiling)."""
    roofline_s = floor_s + gemm_excess_s(model, rows, copy_bw, gemm_flops) if gemm_flops else None
    return {"roofline_ms": roofline_s * 1e3 if roofline_s else None,
            "async_over_roofline": async_s / roofline_s if roofline_s else None}


def rescore(path: str, spec: ModelSpec) -> dict:
    """A saved run's decode steps against the roofline floor (runs from before it was reported): the linears'
    shapes from the model built on the meta device, the copy bandwidth and GEMM ceiling measured in that run."""
    results = json.loads(Path(path).read_text())
    dtype = torch.bfloat16 if results["device"].startswith("cuda") else torch.float32
    model = build_model(spec, 16, dtype, torch.device("meta"))
    for r in results["decode"]:
        if "skipped" not in r:
            r.update(roofline_fields(model, r["batch"], r["floor_ms"] / 1e3, r["async_step_ms"] / 1e3,
                                     results["copy_bandwidth_bytes_s"], results["gemm_ceiling_flops"]))
    return results


def bench_decode(engine, spec, batches, ctx, steps, copy_bw, device, gemm_flops: float | None = None) -> list[dict]:
    runner = engine.runner
    embed_bytes = 0 if spec.tie_word_embeddings else spec.vocab_size * spec.hidden_size * runner.dtype.itemsize
    rows = []
    for bs in batches:
        needed = bs * -(-(ctx + 1) // engine.config.block_size)
        if needed > engine.block_manager.num_free_blocks:
            rows.append({"batch": bs, "skipped": f"needs {needed} KV blocks, {engine.block_manager.num_free_blocks} free"})
            continue
        batch, seqs = decode_batch(engine, bs, ctx)
        for _ in range(3):
            runner.run(batch)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            runner.run(batch)            # ends with the one sync that reads the sampled tokens
            times.append(time.perf_counter() - t0)
        for s in seqs:
            engine.block_manager.free(s)
        step_s = statistics.median(times)
        sync_s, async_s = (engine_decode_s(engine, bs, ctx, steps, a) for a in (False, True))
        # the embedding table is only gathered from; every other weight is read once per step
        bytes_read = runner.weights_bytes - embed_bytes + bs * ctx * runner.kv_bytes_per_token()
        floor_s = bytes_read / copy_bw
        rows.append({"batch": bs, "context": ctx, "step_ms": step_s * 1e3, "tok_s": bs / step_s,
                     "floor_ms": floor_s * 1e3, "floor_over_step": floor_s / step_s,
                     "engine_step_ms": sync_s * 1e3, "async_step_ms": async_s * 1e3,
                     "async_over_floor": async_s / floor_s,
                     **roofline_fields(runner.model, bs, floor_s, async_s, copy_bw, gemm_flops),
                     "bytes_read": bytes_read, "cuda_graph": runner.last_graph_bs})
    return rows


def prefill_s(engine: LLMEngine, tokens: int, reps: int = 3, token_ids: list[int] | None = None) -> float:
    """Median wall time of one lone prefill of `tokens` (default: distinct ids) through the runner (after one
    warm-up)."""
    vocab = engine.config.model.vocab_size
    ids = token_ids if token_ids is not None else [i % vocab for i in range(tokens)]
    seq = Sequence(f"prefill-{tokens}", ids, SamplingParams(max_tokens=1))
    engine.block_manager.allocate(seq, tokens)
    batch = ScheduledBatch([(seq, tokens)])
    engine.runner.run(batch)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        engine.runner.run(batch)
        times.append(time.perf_counter() - t0)
    engine.block_manager.free(seq)
    return statistics.median(times)


def bench_prefill(engine, spec, tokens, gemm_flops, device) -> dict:
    seconds = prefill_s(engine, tokens)
    s = spec
    q, kv = s.num_attention_heads * s.head_dim, s.num_kv_heads * s.head_dim
    linear_params = s.num_layers * (s.hidden_size * (q + 2 * kv) + q * s.hidden_size
                                    + 3 * s.hidden_size * s.intermediate_size)
    # causal attention: QK^T and PV over tokens*(tokens+1)/2 pairs, per head and layer
    attn_flops = s.num_layers * 2 * 2 * tokens * (tokens + 1) / 2 * q
    flops = 2 * linear_params * tokens + attn_flops + 2 * s.hidden_size * s.vocab_size
    return {"tokens": tokens, "time_ms": seconds * 1e3, "tflops": flops / seconds / 1e12,
            "gemm_ceiling_tflops": gemm_flops / 1e12, "fraction_of_gemm": flops / seconds / gemm_flops}


def bench_offline(engine, spec, n, n_in, n_out) -> dict:
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, spec.vocab_size, (n, n_in), generator=g).tolist()
    t0 = time.perf_counter()
    outs = engine.generate(prompts, SamplingParams(max_tokens=n_out, ignore_eos=True))
    seconds = time.perf_counter() - t0
    assert all(len(o) == n_out for o in outs)
    return {"requests": n, "input_tokens": n_in, "output_tokens": n_out, "time_s": seconds,
            "output_tok_s": n * n_out / seconds, "total_tok_s": n * (n_in + n_out) / seconds,
            "preemptions": engine.scheduler.num_preemptions}


def bench_hf(spec, device, dtype, batch, n_in, n_out) -> dict:
    import transformers
    if spec.architecture not in ("llama", "mistral"):
        return {"skipped": f"HF comparison only built for Llama shapes, not {spec.architecture}"}
    cfg = transformers.LlamaConfig(
        hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_attention_heads, num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim, vocab_size=spec.vocab_size, max_position_embeddings=spec.max_position_embeddings,
        rope_theta=spec.rope_theta, rope_scaling=spec.rope_scaling, rms_norm_eps=spec.rms_norm_eps,
        tie_word_embeddings=spec.tie_word_embeddings)
    torch.manual_seed(0)
    old_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)      # initialise in bf16 on the device: no fp32 copy of the model
    try:
        with torch.device(device):
            model = transformers.LlamaForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(old_dtype)
    ids = torch.randint(0, spec.vocab_size, (batch, n_in), device=device)
    kwargs = dict(do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(ids))
    with torch.inference_mode():
        model.generate(ids[:1, :16], max_new_tokens=2, min_new_tokens=2, **{**kwargs, "attention_mask": None})
        t0 = now(device)
        out = model.generate(ids, max_new_tokens=n_out, min_new_tokens=n_out, **kwargs)
        seconds = now(device) - t0
    assert out.shape[1] == n_in + n_out
    del model
    return {"batch": batch, "input_tokens": n_in, "output_tokens": n_out, "time_s": seconds,
            "output_tok_s": batch * n_out / seconds,
            "note": f"eager HF generate on one batch of {batch}; taken as the rate for the whole workload "
                    "(batches back to back)"}


def markdown(results: dict) -> str:
    gemm = results["gemm_ceiling_flops"]
    lines = [f"## Built-in engine: {results['model']} on {results['device_name']} "
             f"(gemv {results['gemv']})", "",
             f"copy bandwidth {results['copy_bandwidth_bytes_s'] / 1e12:.2f} TB/s, "
             + (f"GEMM ceiling {gemm / 1e12:.0f} TFLOP/s, " if gemm else "") +
             f"KV cache {results['kv_cache']['num_kv_blocks']} blocks "
             f"({results['kv_cache']['kv_capacity_tokens']} tokens)", "",
             "runner: `ModelRunner.run` of one fixed batch; engine: `LLMEngine.step()` decoding (scheduler included), "
             "without and with async scheduling.", "",
             "floor: weights + KV read at copy bandwidth; roofline: the same with each linear taking the longer of "
             "its weight bytes and its FLOPs at the GEMM ceiling (not measured with --decode-only).", "",
             "| decode batch | context | runner ms | engine ms | async ms | floor ms | async / floor | "
             "async / roofline | graph |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results["decode"]:
        if "skipped" in r:
            lines.append(f"| {r['batch']} | | skipped: {r['skipped']} | | | | | | |")
        else:
            roofline = f"{r['async_over_roofline']:.2f}" if r.get("async_over_roofline") else ""
            lines.append(f"| {r['batch']} | {r['context']} | {r['step_ms']:.2f} | {r['engine_step_ms']:.2f} | "
                         f"{r['async_step_ms']:.2f} | {r['floor_ms']:.2f} | {r['async_over_floor']:.2f} | "
                         f"{roofline} | {r['cuda_graph']} |")
    if "prefill" not in results:   # --decode-only
        return "\n".join(lines)
    p = results["prefill"]
    lines += ["", f"prefill {p['tokens']} tokens: {p['time_ms']:.1f} ms, {p['tflops']:.0f} TFLOP/s "
                  f"({p['fraction_of_gemm']:.0%} of the GEMM ceiling)"]
    o, h = results["offline"], results["hf_generate"]
    lines.append(f"offline {o['requests']} x {o['input_tokens']} in / {o['output_tokens']} out: "
                 f"{o['output_tok_s']:.0f} output tok/s ({o['time_s']:.1f} s, {o['preemptions']} preemptions)")
    if "offline_async" in results:
        lines.append(f"the same with async scheduling: {results['offline_async']['output_tok_s']:.0f} output tok/s")
    if "output_tok_s" in h:
        lines.append(f"HF generate, batch {h['batch']} subset: {h['output_tok_s']:.0f} output tok/s "
                     f"(engine/HF = {o['output_tok_s'] / h['output_tok_s']:.1f}x)")
    else:
        lines.append(f"HF generate: {h.get('skipped') or h.get('error')}")
    lines.append(f"trace: {results['trace_path']} ({results['trace_steps']} steps)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="Llama-3.1-8B", help="catalog name, local folder, or `tiny`")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="bench_engine.json")
    ap.add_argument("--trace", default=None, help="step trace path (default: next to --out)")
    ap.add_argument("--quick", action="store_true", help="fewer batch sizes and requests")
    ap.add_argument("--no-hf", action="store_true", help="skip the Hugging Face comparison")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.90)
    ap.add_argument("--gemv", choices=gemv.BACKENDS, default=None,
                    help="GEMM of <= 16-row bf16 inputs (default: env PLAN_ENGINE_GEMV, else cublas)")
    ap.add_argument("--decode-only", action="store_true", help="only the decode steps (no prefill/offline/HF)")
    ap.add_argument("--batches", default=None, help="decode batch sizes, e.g. 1,8 (default: the profile's)")
    ap.add_argument("--context", type=int, default=None, help="decode context in tokens (default: the profile's)")
    ap.add_argument("--rescore", metavar="RESULTS_JSON", default=None,
                    help="print a saved run's table with the roofline column (CPU, no benchmark run)")
    args = ap.parse_args()
    if args.gemv:
        gemv.set_backend(args.gemv)

    started = time.perf_counter()
    device = torch.device(args.device)
    profile = dict(PROFILES["cpu" if device.type == "cpu" else "quick" if args.quick else "full"])
    if args.batches:
        profile["batches"] = [int(b) for b in args.batches.split(",")]
    if args.context:
        profile["ctx"] = args.context
    try:
        spec = resolve_model(args.model)[0]
    except EngineError:
        if args.model.lower() not in ("llama-3.1-8b", "llama-8b"):
            raise
        spec = LLAMA_31_8B
    if args.rescore:
        print(markdown(rescore(args.rescore, spec)))
        return
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    trace_path = args.trace or str(Path(args.out).with_suffix(".trace.jsonl"))
    Path(trace_path).unlink(missing_ok=True)

    results: dict = {"model": spec.name, "device": str(device), "profile": "quick" if args.quick else "full",
                     "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "torch": torch.__version__, "gemv": gemv.backend()}
    results["copy_bandwidth_bytes_s"] = copy_bw = copy_bandwidth(device)
    results["gemm_ceiling_flops"] = gemm = None if args.decode_only else gemm_ceiling(device, dtype)

    n, n_in, n_out = profile["offline"]
    ctx = profile["ctx"]
    max_seqs = max(profile["batches"])
    config = EngineConfig(model=spec, device=args.device, seed=0, max_num_seqs=max_seqs,
                          max_num_batched_tokens=max(8192, profile["prefill"]) if device.type == "cuda" else 512,
                          max_model_len=max(profile["prefill"], n_in + n_out, ctx + 1) + 16,
                          gpu_memory_utilization=args.gpu_memory_utilization, trace_path=trace_path,
                          num_kv_blocks=None if device.type == "cuda" else max_seqs * (ctx // 16 + 2) + 64)
    t0 = time.perf_counter()
    engine = LLMEngine(config)
    results["engine_start_s"] = time.perf_counter() - t0
    results["kv_cache"] = engine.runner.kv_info()
    results["decode"] = bench_decode(engine, spec, profile["batches"], ctx, profile["steps"], copy_bw, device, gemm)
    if args.decode_only:
        engine.close()
        results["wall_s"] = time.perf_counter() - started
        Path(args.out).write_text(json.dumps(results, indent=2))
        print(markdown(results))
        return
    results["prefill"] = bench_prefill(engine, spec, profile["prefill"], gemm, device)
    results["offline"] = bench_offline(engine, spec, n, n_in, n_out)
    engine.async_scheduling = True
    results["offline_async"] = bench_offline(engine, spec, n, n_in, n_out)
    engine.close()
    results["trace_path"] = trace_path
    results["trace_steps"] = sum(1 for _ in open(trace_path))
    del engine
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if args.no_hf:
        results["hf_generate"] = {"skipped": "--no-hf"}
    else:
        try:
            results["hf_generate"] = bench_hf(spec, device, dtype, *profile["hf"][:1], n_in, profile["hf"][1])
        except Exception as e:   # the engine's numbers are still worth keeping
            results["hf_generate"] = {"error": f"{type(e).__name__}: {e}"[:500]}
    results["wall_s"] = time.perf_counter() - started
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(markdown(results))


if __name__ == "__main__":
    main()
