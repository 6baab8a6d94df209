"""Where a decode step's time goes (GPU): host overhead, kernels of the CUDA graph, each op beside its floor.

  python benchmarks/engine_decode_diag.py --out diag.json          # Llama-3.1-8B shape, dummy bf16, 1k context

Per batch size: (1) `runner.run()` wall time vs the graph replay alone (CUDA events over back-to-back replays)
and the host phases of `run()` (inputs, replay launch, sampling + sync); (2) torch.profiler's kernels of a few
replays grouped by name, and the idle time before each kernel (by name); (3) each op of a layer timed alone in
a CUDA graph over all 32 layers' own weights and caches (so weights stream from HBM as in the model), beside its
bandwidth floor (bytes / copy bandwidth); GEMMs under both cuBLAS and cuBLASLt. The gap between the sum of (3)
and the replay is what the graph loses between kernels.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from bench_engine import LLAMA_31_8B, copy_bandwidth, decode_batch

from backends.engine import gemv
from backends.engine.attention import decode_attention
from backends.engine.config import EngineConfig
from backends.engine.engine import LLMEngine
from backends.engine.kernels import qk_norm_rope_store, rms_norm, silu_and_mul


def graph_time(fn, reps: int = 10) -> float:
    """Seconds per call of `fn` (a sequence of launches) captured once in a CUDA graph and replayed."""
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    g.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        g.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / reps


def kernel_tables(runner, bs: int, reps: int = 5) -> tuple[list[dict], list[dict]]:
    """torch.profiler's GPU kernels of `reps` graph replays: per kernel name, its time per step, and the idle time
    before it per step (its start minus the previous kernel's end: where the graph loses time between kernels;
    the first kernel of a replay also carries the gap between replays)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    graph = runner.graphs[bs]
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            graph.replay()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", None)
        us = e.self_cuda_time_total if us is None else us
        if us > 0:
            rows.append({"kernel": e.key[:90], "calls_per_step": e.count / reps, "us_per_step": us / reps})
    kernels = sorted((e for e in prof.events() if e.device_type == DeviceType.CUDA), key=lambda e: e.time_range.start)
    idle: dict[str, list[float]] = defaultdict(list)
    for prev, cur in zip(kernels, kernels[1:]):
        idle[cur.name[:90]].append(max(0.0, cur.time_range.start - prev.time_range.end))
    gaps = [{"before_kernel": name, "gaps_per_step": len(v) / reps, "us_per_step": sum(v) / reps,
             "median_us": statistics.median(v)} for name, v in idle.items()]
    return sorted(rows, key=lambda r: -r["us_per_step"]), sorted(gaps, key=lambda r: -r["us_per_step"])


def op_table(runner, bs: int, meta, bw: float) -> list[dict]:
    """Each op of the decoder alone, over all layers (own weights/caches), in a CUDA graph."""
    model = runner.model
    layers = model.model.layers
    L = len(layers)
    dev, dt = runner.device, runner.dtype
    hidden = model.spec.hidden_size
    attn0 = layers[0].self_attn
    H, KVH, D = attn0.num_heads, attn0.num_kv_heads, attn0.head_dim
    x = torch.randn(bs, hidden, device=dev, dtype=dt)
    rows = []

    def add(name, fn, n_calls, bytes_total):
        t = graph_time(fn)
        rows.append({"op": name, "calls": n_calls, "us_per_step": t * 1e6, "us_per_call": t * 1e6 / n_calls,
                     "floor_us": bytes_total / bw * 1e6, "floor_over_time": bytes_total / bw / t})

    gemms = [("qkv", [l.self_attn.qkv_proj.weight for l in layers]),
             ("o_proj", [l.self_attn.o_proj.weight for l in layers]),
             ("gate_up", [l.mlp.gate_up_proj.weight for l in layers]),
             ("down", [l.mlp.down_proj.weight for l in layers]),
             ("lm_head", [model.lm_head.weight])]
    for lib in ("cublas", "cublaslt"):
        torch.backends.cuda.preferred_blas_library(lib)
        for name, ws in gemms:
            ins = [torch.randn(bs, w.shape[1], device=dev, dtype=dt) for w in ws[:1]] * len(ws)
            wbytes = sum(w.numel() * w.element_size() for w in ws)
            add(f"{name} {bs}x{ws[0].shape[1]}x{ws[0].shape[0]} [{lib}]",
                lambda ws=ws, ins=ins: [F.linear(a, w) for a, w in zip(ins, ws)], len(ws), wbytes)
    torch.backends.cuda.preferred_blas_library("cublas")
    if bs <= gemv.MAX_ROWS:   # the Triton skinny GEMM (PLAN_ENGINE_GEMV=triton), whatever the engine runs
        for name, ws in gemms:
            ins = [torch.randn(bs, ws[0].shape[1], device=dev, dtype=dt)] * len(ws)
            add(f"{name} {bs}x{ws[0].shape[1]}x{ws[0].shape[0]} [triton {gemv.config(*ws[0].shape, dev)}]",
                lambda ws=ws, ins=ins: [gemv.gemv(a, w) for a, w in zip(ins, ws)], len(ws),
                sum(w.numel() * w.element_size() for w in ws))

    qkv = torch.randn(bs, (H + 2 * KVH) * D, device=dev, dtype=dt)
    q = qkv[:, :H * D].view(bs, H, D)
    k = qkv[:, H * D:(H + KVH) * D].view(bs, KVH, D)
    v = qkv[:, (H + KVH) * D:].view(bs, KVH, D)
    ctx_bytes = int(meta.decode_context_lens.sum()) * 2 * KVH * D * runner.k_cache.element_size()
    # the engine's split count (*) beside the others: how many tokens each program should stream
    for splits in sorted({1, 2, 4, 8, 16, meta.decode_num_splits}):
        add(f"decode_attention (+merge) splits={splits}{'*' if splits == meta.decode_num_splits else ''}",
            lambda splits=splits: [decode_attention(q, l.self_attn.k_cache, l.self_attn.v_cache,
                                                    meta.decode_block_tables, meta.decode_context_lens,
                                                    attn0.scale, splits) for l in layers],
            L, L * ctx_bytes)
    pos = torch.full((bs,), 1024, device=dev, dtype=torch.long)
    add("qk_rope_store",
        lambda: [qk_norm_rope_store(q, k, v, pos, model.cos_sin, l.self_attn.k_cache, l.self_attn.v_cache,
                                    meta.slot_mapping) for l in layers], L, 0)
    res = torch.randn(bs, hidden, device=dev, dtype=dt)
    w = layers[0].input_layernorm.weight
    add("rms_norm+residual x2", lambda: [rms_norm(x, w, 1e-5, res) for _ in range(2 * L)], 2 * L, 0)
    gu = torch.randn(bs, 2 * model.spec.intermediate_size, device=dev, dtype=dt)
    add("silu_and_mul", lambda: [silu_and_mul(gu) for _ in range(L)], L, 0)
    logits = torch.randn(bs, model.spec.vocab_size, device=dev, dtype=dt)
    add("argmax (sampling)", lambda: logits.argmax(dim=-1), 1, logits.numel() * 2)
    emb = torch.zeros(bs, device=dev, dtype=torch.long)
    add("embedding", lambda: model.model.embed_tokens(emb), 1, bs * hidden * 2)
    return rows


def host_phases(runner, batch, steps: int) -> dict:
    """Median seconds of run()'s phases, each ended by a sync so the GPU work is charged to its phase."""
    t = defaultdict(list)
    with torch.inference_mode():
        for _ in range(steps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            step = runner._host_inputs(batch, pad_to=runner.last_graph_bs or 0)
            step["graph_bs"] = runner.last_graph_bs
            t1 = time.perf_counter()
            logits = runner._replay(step["graph_bs"], step)
            t3 = time.perf_counter()
            torch.cuda.synchronize()
            t4 = time.perf_counter()
            logits.argmax(dim=-1).tolist()
            t5 = time.perf_counter()
            for k, a, b in (("host_lists", t0, t1), ("upload_and_replay_launch", t1, t3),
                            ("gpu_wait", t3, t4), ("argmax_tolist", t4, t5)):
                t[k].append(b - a)
    return {k: statistics.median(v) * 1e3 for k, v in t.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="1,8,64,256")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--no-ops", action="store_true", help="skip the per-op table")
    ap.add_argument("--out", default="engine_decode_diag.json")
    ap.add_argument("--check-graphs", action="store_true", help="first: tiny model, graphs vs eager, greedy")
    ap.add_argument("--gemv", choices=gemv.BACKENDS, default=None,
                    help="GEMM of <= 16-row bf16 inputs (default: env PLAN_ENGINE_GEMV, else cublas)")
    args = ap.parse_args()
    if args.gemv:
        gemv.set_backend(args.gemv)
    if args.check_graphs:
        check_graphs()
    batches = [int(b) for b in args.batches.split(",")]
    dev = torch.device("cuda")
    bw = copy_bandwidth(dev)
    spec = LLAMA_31_8B
    config = EngineConfig(model=spec, device="cuda", seed=0, max_num_seqs=max(batches), max_num_batched_tokens=2048,
                          max_model_len=args.ctx + 64, num_kv_blocks=max(batches) * (args.ctx // 16 + 2) + 64)
    t0 = time.perf_counter()
    engine = LLMEngine(config)
    runner = engine.runner
    out = {"device": torch.cuda.get_device_name(dev), "torch": torch.__version__, "gemv": gemv.backend(),
           "copy_bw": bw,
           "engine_start_s": time.perf_counter() - t0, "batches": []}
    embed_bytes = spec.vocab_size * spec.hidden_size * runner.dtype.itemsize
    print(f"copy bandwidth {bw / 1e12:.2f} TB/s, engine start {out['engine_start_s']:.1f} s", flush=True)
    for bs in batches:
        batch, seqs = decode_batch(engine, bs, args.ctx)
        for _ in range(3):
            runner.run(batch)
        wall = []
        for _ in range(args.steps):
            t = time.perf_counter()
            runner.run(batch)
            wall.append(time.perf_counter() - t)
        run_ms = statistics.median(wall) * 1e3
        g = runner.graphs[runner.last_graph_bs]
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(args.steps):
            g.replay()
        end.record()
        end.synchronize()
        replay_ms = start.elapsed_time(end) / args.steps
        bytes_read = runner.weights_bytes - embed_bytes + bs * args.ctx * runner.kv_bytes_per_token()
        floor_ms = bytes_read / bw * 1e3
        row = {"batch": bs, "run_ms": run_ms, "replay_ms": replay_ms, "host_ms": run_ms - replay_ms,
               "floor_ms": floor_ms, "floor_over_run": floor_ms / run_ms, "floor_over_replay": floor_ms / replay_ms,
               "phases_ms": host_phases(runner, batch, 10)}
        try:
            row["kernels"], row["gaps"] = kernel_tables(runner, bs)
        except Exception as e:    # noqa: BLE001  (the rest is still worth having)
            print(f"profiler failed: {e!r}")
            row["kernels"], row["gaps"] = [], []
        kernel_sum_ms = sum(k["us_per_step"] for k in row["kernels"]) / 1e3
        row["kernel_sum_ms"] = kernel_sum_ms
        print(f"\n## batch {bs}: run {run_ms:.3f} ms, graph replay {replay_ms:.3f} ms (host {run_ms - replay_ms:.3f}),"
              f" floor {floor_ms:.3f} ms, floor/run {floor_ms / run_ms:.3f}, floor/replay {floor_ms / replay_ms:.3f},"
              f" kernel sum {kernel_sum_ms:.3f} ms (gaps {replay_ms - kernel_sum_ms:.3f})", flush=True)
        print("phases (ms, synced): " + ", ".join(f"{k} {v:.3f}" for k, v in row["phases_ms"].items()))
        print("| kernel | calls/step | us/step |\n|---|---|---|")
        for k in row["kernels"][:14]:
            print(f"| {k['kernel']} | {k['calls_per_step']:.0f} | {k['us_per_step']:.1f} |")
        print("| idle before kernel | gaps/step | us/step | median us |\n|---|---|---|---|")
        for k in row["gaps"][:8]:
            print(f"| {k['before_kernel']} | {k['gaps_per_step']:.0f} | {k['us_per_step']:.1f} | {k['median_us']:.2f} |")
        if not args.no_ops:
            meta = runner_meta(runner, bs)
            row["ops"] = op_table(runner, bs, meta, bw)
            print("| op (alone, all layers) | calls | us/step | us/call | floor us | floor/time |\n|---|---|---|---|---|---|")
            for o in row["ops"]:
                print(f"| {o['op']} | {o['calls']} | {o['us_per_step']:.1f} | {o['us_per_call']:.2f} | "
                      f"{o['floor_us']:.1f} | {o['floor_over_time']:.2f} |")
        for s in seqs:
            engine.block_manager.free(s)
        out["batches"].append(row)
        sys.stdout.flush()
    engine.close()
    Path(args.out).write_text(json.dumps(out, indent=2))


def check_graphs() -> None:
    """Greedy tokens of the tiny model (fp32) through the CUDA graphs and eagerly, on uneven batches."""
    from backends.engine.config import TINY, SamplingParams
    prompts = [[(7 * i + j) % 500 for j in range(5 + 3 * i)] for i in range(11)]
    outs = []
    for graphs in (True, False):
        engine = LLMEngine(EngineConfig(model=TINY, device="cuda", dtype="fp32", seed=0, max_num_seqs=16,
                                        num_kv_blocks=256, max_model_len=256, cuda_graphs=graphs))
        outs.append(engine.generate(prompts, SamplingParams(max_tokens=24, ignore_eos=True)))
        engine.close()
    same = sum(a == b for a, b in zip(*outs))
    print(f"graphs vs eager (tiny, fp32, greedy): {same}/{len(prompts)} sequences identical", flush=True)


def runner_meta(runner, bs):
    """The graph's own decode metadata (already filled by the last run())."""
    from backends.engine.attention import AttentionMetadata, decode_num_splits
    return AttentionMetadata(slot_mapping=runner.graph_slots[:bs], decode_block_tables=runner.graph_tables[:bs],
                             decode_context_lens=runner.graph_ctx[:bs],
                             decode_num_splits=decode_num_splits(bs, runner.num_local_kv_heads, runner.device))


if __name__ == "__main__":
    main()
