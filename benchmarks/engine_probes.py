"""Measurements behind cost-model and kernel choices (one GPU, about two minutes).

  python benchmarks/engine_probes.py --out probes.json [--only decode,sustained,prefill]

decode     the engine's decode-attention kernel by head size (64, 128), batch and context, at context tiles
           of 32/64/128 tokens: achieved KV bandwidth against the copy bandwidth (which tile each head size
           should use; whether one bandwidth efficiency fits both head sizes).
sustained  one Llama-3.1-8B gate_up GEMM (8192 x 4096 x 28672, bf16) back to back for ~3 s, each call timed,
           SM clock and power polled through NVML meanwhile: does a long compute-bound step run slower than
           the microbenchmark's short bursts (clock throttling under sustained load)?
prefill    Llama-3.1-8B prefills of 1024-4096 tokens through the engine's runner, on the piecewise graphs
           where the size has a bucket and eagerly (the same size both ways at 1024 and 2048), and just past
           a 128-row tile (2056, 2176): what the eager path and tile rounding cost.
contention Llama-3.1-8B prefill of 1,024 tokens and a decode step of 32 sequences through the runner, timed alone,
           after a 1 s idle gap, beside a Python thread that holds the interpreter (a busy loop), beside one that
           wakes every millisecond for ~0.2 ms of work, beside one that runs 3 ms of Python every 8 ms (an event
           loop streaming ~100 tokens per step; with the default and a 0.2 ms switch interval), back to back 3 s;
           SM clock polled meanwhile: why a served run's steps are slower than the step grid's on one machine.
stages     the decode-attention kernel (head size 128, 1k context) at batch 1-256 over every power-of-two split
           count and software-pipeline depth 1-3 (Triton's default is 3): whether shared memory for stages a
           one- or two-tile program never uses is what limits how many programs an SM holds.
splits     the same kernel at 1k and 4k context, batch 1-256 including the sizes just past a wave of programs
           (65, 80, 129, ...), at 1-16 splits: the split count each batch should take.
rows       does a GEMM run faster when its input rows are all the same (as in a prompt of one repeated token)?
           Llama-3.1-8B-shaped bf16 and fp8 GEMMs at 1,024 and 4,096 rows with random rows against one row repeated,
           then engine prefills of 1,024 and 4,096 tokens of one repeated id against random ids (power draw
           depends on how many bits toggle: the step grid once prefilled `[1] * length`).
gemv_tma   Llama-3.1-8B's decode linears at 1, 8 and 16 rows: cuBLAS, cuBLASLt, the Triton GEMV (cp.async) and a GEMV whose
           weight tiles arrive by TMA, over tile sizes and pipeline depths (cold weight copies, as the race times them).
kvlayout   the decode-attention kernel (head size 128, 1k context) at batch 8-256 over KV cache layouts: token-major
           ([blocks, block_size, kv_heads, D], each head's token a 256-byte piece of a 2 KB row) against head-major
           ([blocks, kv_heads, block_size, D], each head's block contiguous), block sizes 16 and 32, and program order
           (sequence-major grid against kv-head-major); beside the read-only bandwidth of a plain streaming kernel.
tail       the decode-attention kernel (head size 128, its 64-token tiles) at batch 8-256 with contexts just past a tile
           (1024 against 1025, 1040, 1056, 1088 tokens; a decode at position 1024 attends to 1,025), with the tokens
           past the last whole tile in 16-, 32- or 64-token tiles: what a nearly empty last tile costs, and what
           smaller tail tiles save.
warps      the decode-attention kernel (head size 128, 1,025 tokens) at batch 1-256, default and doubled split counts,
           over Triton launch options: 4 or 8 warps, a register cap (`maxnreg`), pipeline depth.
async_trace the step trace of an async-scheduling engine with prefills among decodes: is each step charged its own
           time (device events), and do the steps add up to the run's wall time?
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.prompts import random_ids


def copy_bandwidth() -> float:
    x = torch.empty(2 ** 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        y.copy_(x)
    end.record()
    end.synchronize()
    return 2 * 10 * x.numel() / (start.elapsed_time(end) / 1e3)


def decode_sets(batch: int, context: int, shape) -> tuple[list, int]:
    """Rotating input sets for the decode-attention kernel (bf16 paged caches of `context` tokens a sequence, more
    bytes in all than L2 holds) and the K/V bytes one call reads."""
    from profilers.attention import _paged_set
    from profilers.timing import rotation_sets

    kv_bytes = 2 * 2 * batch * shape.kv_heads * context * shape.head_dim
    return [_paged_set(torch, "cuda", batch, context, shape)
            for _ in range(rotation_sets(kv_bytes, 60e6, max_sets=16))], kv_bytes


def time_decode(timer, sets: list, splits: int, **options) -> float:
    """Seconds a call of the decode-attention kernel (decode_attention_triton's `options`) takes over `sets` (the
    softmax scale does not change its speed)."""
    from backends.engine import attention

    def op(i):
        q, kc, vc, bt, cl = sets[i]
        attention.decode_attention_triton(q, kc, vc, bt, cl, 0.088, splits, **options)
    return timer.time(op, len(sets)).seconds


def time_checked(timer, variants: dict, n_sets: int, out, row: dict, kv_bytes: int, copy_bw: float,
                 reps: int = 2) -> list[dict]:
    """Each of `variants` (calls of one set index that write `out`) checked against the first one's output, then
    timed `reps` times over the `n_sets` rotating sets: rows of `row` + variant, rep, µs and fraction of copy."""
    rows, ref = [], None
    for name, op in variants.items():
        op(0)
        torch.cuda.synchronize()
        if ref is None:
            ref = out.clone()
        else:
            assert torch.allclose(out.float(), ref.float(), atol=2e-2), name
        for rep in range(reps):
            t = timer.time(op, n_sets).seconds
            rows.append({**row, "variant": name, "rep": rep, "us": t * 1e6, "fraction_of_copy": kv_bytes / t / copy_bw})
            print(rows[-1], flush=True)
    return rows


def decode_timer():
    """The decode-kernel probes' timer: ~2 ms of calls a repeat, the median of 9."""
    from profilers.timing import CudaTimer
    return CudaTimer(warmup=3, repeats=9, target_s=2e-3)


def decode_setup():
    """(timer, head shape) of the decode-kernel probes: Llama-3.1-8B's 32 query and 8 KV heads of 128."""
    from profilers.sweeps import AttentionShape
    return decode_timer(), AttentionShape(32, 8, 128)


def probe_decode(copy_bw: float) -> list[dict]:
    from backends.engine import attention
    from profilers.sweeps import AttentionShape

    timer, rows = decode_timer(), []
    for head_dim in (64, 128):
        shape = AttentionShape(32, 8, head_dim)
        for batch, context in ((1, 1024), (32, 1024), (128, 1024), (128, 4096), (256, 4096)):
            sets, kv_bytes = decode_sets(batch, context, shape)
            splits = attention.decode_num_splits(batch, shape.kv_heads, torch.device("cuda"))
            for tile in (32, 64, 128):
                t = time_decode(timer, sets, splits, tile=tile)
                rows.append({"head_dim": head_dim, "batch": batch, "context": context, "tile": tile,
                             "splits": splits, "seconds": t, "kv_bytes": kv_bytes,
                             "fraction_of_copy": kv_bytes / t / copy_bw,
                             "default": tile == attention.decode_tile(head_dim)})
            del sets
            torch.cuda.empty_cache()
    return rows


def probe_splits(copy_bw: float, batches=(1, 8, 16, 32, 64, 256), contexts=(1024,), split_counts=(1, 2, 4, 8, 16, 32),
                 stage_counts=(1, 2, 3)) -> list[dict]:
    """The decode-attention kernel (head size 128) at each batch and context over split counts and pipeline depths
    (None: Triton's default)."""
    from backends.engine import attention

    (timer, shape), rows = decode_setup(), []
    for context in contexts:
        for batch in batches:
            sets, kv_bytes = decode_sets(batch, context, shape)
            default = attention.decode_num_splits(batch, shape.kv_heads, torch.device("cuda"))
            for splits in split_counts:
                if batch * shape.kv_heads * splits > 16384 and splits != default:
                    continue
                for stages in stage_counts:
                    t = time_decode(timer, sets, splits, launch=None if stages is None else {"num_stages": stages})
                    rows.append({"batch": batch, "context": context, "splits": splits, "stages": stages,
                                 "seconds": t, "fraction_of_copy": kv_bytes / t / copy_bw,
                                 "default_splits": splits == default})
            del sets
            torch.cuda.empty_cache()
    return rows


def read_bandwidth(nbytes: int = 2 ** 31) -> dict:
    """Read-only bandwidth: torch's sum and a Triton kernel that streams 128 KB a program (decode attention only
    reads; the copy bandwidth the floor divides by also writes)."""
    import triton
    import triton.language as tl

    @triton.jit
    def _read_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr, ITERS: tl.constexpr):
        base = tl.program_id(0).to(tl.int64) * BLOCK * ITERS
        acc = tl.zeros([BLOCK], tl.float32)
        for i in range(ITERS):
            offs = base + i * BLOCK + tl.arange(0, BLOCK)
            acc += tl.load(x_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
        tl.store(out_ptr + tl.program_id(0), tl.sum(acc, axis=0))

    x = torch.randn(nbytes // 2, dtype=torch.bfloat16, device="cuda")
    block, iters = 4096, 16
    grid = triton.cdiv(x.numel(), block * iters)
    out = torch.empty(grid, dtype=torch.float32, device="cuda")
    result = {}
    for name, fn in (("torch_sum", lambda: x.sum()),
                     ("triton", lambda: _read_kernel[(grid,)](x, out, x.numel(), BLOCK=block, ITERS=iters,
                                                             num_warps=8))):
        for _ in range(3):
            fn()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            fn()
        end.record()
        end.synchronize()
        result[name] = 10 * nbytes / (start.elapsed_time(end) / 1e3)
    return result


def probe_kvlayout(copy_bw: float, batches=(8, 32, 64, 128, 256), context: int = 1024) -> dict:
    """Decode attention over each KV layout, block size and program order (see the module docstring)."""
    from backends.engine import attention
    from profilers.timing import rotation_sets

    timer = decode_timer()
    heads, kv_heads, head_dim = 32, 8, 128
    rows = []
    for block_size in (16, 32):
        for batch in batches:
            kv_bytes = 2 * 2 * batch * kv_heads * context * head_dim
            blocks_per_seq = -(-context // block_size)
            n_blocks = batch * blocks_per_seq
            splits = attention.decode_num_splits(batch, kv_heads, torch.device("cuda"))
            for layout in ("token", "head"):
                def cache():
                    if layout == "token":
                        return torch.randn(n_blocks, block_size, kv_heads, head_dim, dtype=torch.bfloat16, device="cuda")
                    return torch.randn(n_blocks, kv_heads, block_size, head_dim, dtype=torch.bfloat16,
                                       device="cuda").transpose(1, 2)
                sets = [(torch.randn(batch, heads, head_dim, dtype=torch.bfloat16, device="cuda"), cache(), cache(),
                         torch.randperm(n_blocks, device="cuda").to(torch.int32).view(batch, blocks_per_seq),
                         torch.full((batch,), context, dtype=torch.int32, device="cuda"))
                        for _ in range(rotation_sets(kv_bytes, 60e6, max_sets=16))]
                out = torch.empty(batch, heads, head_dim, dtype=torch.bfloat16, device="cuda")
                dec = attention.DecodeRows.allocate(batch, heads, kv_heads, head_dim, torch.device("cuda"),
                                                    torch.tensor([batch, 0], dtype=torch.int64, device="cuda"))
                for order in ("sequence", "kv_head"):
                    def op(i, order=order, sets=sets, dec=dec, out=out):
                        q, kc, vc, bt, cl = sets[i]
                        if order == "sequence":
                            attention.decode_attention_triton(q, kc, vc, bt, cl, 0.088, splits, out=out)
                        else:
                            attention.decode_attention_rows(q, kc, vc, bt, cl, 0.088, dec, out)
                    t = timer.time(op, len(sets)).seconds
                    rows.append({"batch": batch, "context": context, "block_size": block_size, "layout": layout,
                                 "order": order, "splits": splits, "seconds": t,
                                 "fraction_of_copy": kv_bytes / t / copy_bw})
                del sets
                torch.cuda.empty_cache()
    return {"read_bandwidth": read_bandwidth(), "rows": rows}


def probe_tail(copy_bw: float, batches=(8, 32, 64, 256), contexts=(1024, 1025, 1040, 1056, 1088)) -> list[dict]:
    """The decode-attention kernel just past a whole number of tiles (see the module docstring)."""
    from backends.engine import attention

    (timer, shape), rows = decode_setup(), []
    for batch in batches:
        for context in contexts:
            sets, kv_bytes = decode_sets(batch, context, shape)
            splits = attention.decode_num_splits(batch, shape.kv_heads, torch.device("cuda"))
            for tail in (16, 32, 64):
                t = time_decode(timer, sets, splits, tail=tail)
                rows.append({"batch": batch, "context": context, "tail": tail, "splits": splits, "seconds": t,
                             "fraction_of_copy": kv_bytes / t / copy_bw})
            del sets
            torch.cuda.empty_cache()
    return rows


WARP_LAUNCHES = ({}, {"num_warps": 8}, {"num_warps": 8, "maxnreg": 128}, {"num_warps": 4, "maxnreg": 168},
                 {"num_warps": 4, "maxnreg": 128}, {"num_warps": 8, "num_stages": 2}, {"num_warps": 8, "num_stages": 4})


def probe_warps(copy_bw: float, batches=(1, 8, 32, 64, 128, 256), context: int = 1025) -> list[dict]:
    """The decode-attention kernel over launch options (see the module docstring)."""
    from backends.engine import attention

    (timer, shape), rows = decode_setup(), []
    for batch in batches:
        sets, kv_bytes = decode_sets(batch, context, shape)
        default = attention.decode_num_splits(batch, shape.kv_heads, torch.device("cuda"))
        for splits in sorted({default, min(16, 2 * default)}):
            for launch in WARP_LAUNCHES:
                try:
                    t = time_decode(timer, sets, splits, launch=launch)
                except Exception as e:  # noqa: BLE001 - an option this Triton lacks: the rest still run
                    rows.append({"batch": batch, "splits": splits, "launch": launch, "error": str(e)[:200]})
                    continue
                rows.append({"batch": batch, "context": context, "splits": splits, "default_splits": splits == default,
                             "launch": launch, "seconds": t, "fraction_of_copy": kv_bytes / t / copy_bw})
        del sets
        torch.cuda.empty_cache()
    return rows


class _Nvml:
    """SM clock and power sampled by NVML every `period_s` while a block runs (`samples`: {t_s, sm_mhz, power_w}; one
    {error} entry where NVML is unavailable, none on the CPU)."""

    def __init__(self, period_s: float = 0.01):
        self.period_s, self.samples, self.nvml = period_s, [], None
        if not torch.cuda.is_available():
            return
        try:
            import pynvml
            pynvml.nvmlInit()
            self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        except Exception as e:  # noqa: BLE001 - the timings still say it
            self.samples.append({"error": f"{type(e).__name__}: {e}"})

    def __enter__(self):
        self.stop = threading.Event()

        def poll():
            t0 = time.perf_counter()
            while self.nvml and not self.stop.is_set():
                self.samples.append({"t_s": time.perf_counter() - t0,
                                     "sm_mhz": self.nvml.nvmlDeviceGetClockInfo(self.handle, self.nvml.NVML_CLOCK_SM),
                                     "power_w": self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1e3})
                time.sleep(self.period_s)
        self.thread = threading.Thread(target=poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def sm_mhz(self) -> list[int]:
        return [x["sm_mhz"] for x in self.samples if "sm_mhz" in x]


def probe_sustained(seconds: float = 3.0) -> dict:
    x = torch.randn(8192, 4096, dtype=torch.bfloat16, device="cuda")
    w = torch.randn(4096, 28672, dtype=torch.bfloat16, device="cuda")
    flops = 2 * 8192 * 4096 * 28672
    for _ in range(3):
        x @ w
    torch.cuda.synchronize()
    one = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    one[0].record()
    x @ w
    one[1].record()
    one[1].synchronize()
    n = max(10, int(seconds * 1e3 / one[0].elapsed_time(one[1])))
    events = [torch.cuda.Event(enable_timing=True) for _ in range(n + 1)]
    with _Nvml(period_s=0.02) as nvml:
        time.sleep(0.2)              # idle clock first
        events[0].record()
        for i in range(n):
            x @ w
            events[i + 1].record()
        events[-1].synchronize()
        time.sleep(0.1)
    ms = [events[i].elapsed_time(events[i + 1]) for i in range(n)]
    tflops = [flops / (m / 1e3) / 1e12 for m in ms]
    k = max(1, n // 20)
    return {"calls": n, "call_ms_first": statistics.median(ms[:k]), "call_ms_last": statistics.median(ms[-k:]),
            "tflops_first": statistics.median(tflops[:k]), "tflops_last": statistics.median(tflops[-k:]),
            "tflops_by_20th": [round(statistics.median(tflops[i:i + k]), 1) for i in range(0, n - k + 1, k)],
            "nvml": nvml.samples}


def probe_prefill() -> list[dict]:
    from backends.engine.config import EngineConfig, resolve_model
    from backends.engine.engine import LLMEngine
    from benchmarks.bench_engine import prefill_s

    spec = resolve_model("Llama-3.1-8B")[0]
    engine = LLMEngine(EngineConfig(model=spec, device="cuda", max_num_seqs=16, max_num_batched_tokens=8192,
                                    max_model_len=8448, gpu_memory_utilization=0.5))
    runner = engine.runner
    piecewise = runner.piecewise
    rows = []
    for tokens, eager in ((1024, False), (1024, True), (2040, False), (2048, False), (2048, True), (2056, True),
                          (2176, True), (3072, True), (4096, True)):
        runner.piecewise = None if eager else piecewise
        ms = prefill_s(engine, tokens, reps=5) * 1e3
        rows.append({"tokens": tokens, "eager": eager, "piecewise_tokens": runner.last_piecewise_size, "ms": ms})
    runner.piecewise = piecewise
    engine.close()
    return rows


def _median_ms(fn, reps: int = 20) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def probe_rows(model: str = "Llama-3.1-8B") -> dict:
    from backends.engine.config import EngineConfig, resolve_model
    from backends.engine.engine import LLMEngine
    from benchmarks.bench_engine import prefill_s

    gemms = []
    for m in (1024, 4096):
        for n, k in ((28672, 4096), (4096, 14336)):
            w = torch.randn(n, k, dtype=torch.bfloat16, device="cuda")
            w8 = w.to(torch.float8_e4m3fn).t()
            scale_a = torch.ones(m, 1, dtype=torch.float32, device="cuda")     # row-wise, as the profiler
            scale_b = torch.ones(1, n, dtype=torch.float32, device="cuda")
            for rows in ("random", "repeated"):
                x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
                if rows == "repeated":
                    x = x[:1].expand(m, k).contiguous()
                x8 = x.to(torch.float8_e4m3fn)
                bf16_ms = _median_ms(lambda: torch.nn.functional.linear(x, w))
                fp8_ms = _median_ms(lambda: torch._scaled_mm(x8, w8, scale_a=scale_a, scale_b=scale_b,
                                                             out_dtype=torch.bfloat16, use_fast_accum=True))
                gemms.append({"m": m, "n": n, "k": k, "rows": rows, "bf16_ms": bf16_ms, "fp8_ms": fp8_ms,
                              "bf16_tflops": 2 * m * n * k / bf16_ms / 1e9, "fp8_tflops": 2 * m * n * k / fp8_ms / 1e9})
    spec = resolve_model(model)[0]
    engine = LLMEngine(EngineConfig(model=spec, device="cuda", max_num_seqs=16, max_num_batched_tokens=8192,
                                    max_model_len=8448, gpu_memory_utilization=0.5))
    gen = torch.Generator().manual_seed(0)
    prefills = []
    for tokens in (1024, 4096):
        for ids in ("random", "repeated"):
            token_ids = (torch.randint(0, spec.vocab_size, (tokens,), generator=gen).tolist() if ids == "random"
                         else [1] * tokens)
            prefills.append({"tokens": tokens, "ids": ids, "ms": prefill_s(engine, tokens, 7, token_ids) * 1e3})
    engine.close()
    return {"gemms": gemms, "prefills": prefills}


def probe_contention(model: str = "Llama-3.1-8B", device: str = "cuda", sustained_s: float = 3.0,
                     decode_ctx: int = 1024) -> list[dict]:
    from backends.engine.config import EngineConfig, SamplingParams, resolve_model
    from backends.engine.engine import LLMEngine
    from backends.engine.scheduler import ScheduledBatch
    from backends.engine.sequence import Sequence
    from benchmarks.bench_engine import decode_batch

    spec = resolve_model(model)[0]
    engine = LLMEngine(EngineConfig(model=spec, device=device, max_num_seqs=64, max_num_batched_tokens=2048,
                                    max_model_len=4096, gpu_memory_utilization=0.5))
    lone = Sequence("prefill-1024", [i % spec.vocab_size for i in range(1024)], SamplingParams(max_tokens=1))
    engine.block_manager.allocate(lone, 1024)
    prefill = ScheduledBatch([(lone, 1024)])
    decode = decode_batch(engine, 32, decode_ctx)[0]

    def timed(batch, reps, gap_s=0.0):
        out = []
        for _ in range(reps):
            if gap_s:
                time.sleep(gap_s)
            t0 = time.perf_counter()
            engine.runner.run(batch)
            out.append(time.perf_counter() - t0)
        return out

    def busy(stop):
        x = 0
        while not stop.is_set():
            x += 1

    def chatty(stop, busy_s=2e-4, idle_s=1e-3):
        while not stop.is_set():
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < busy_s:
                pass
            time.sleep(idle_s)

    def bursty(stop):            # a server's event loop streaming ~100 tokens after each step: 3 ms of Python
        chatty(stop, 3e-3, 5e-3)

    rows = []
    for name, batch in (("prefill 1024", prefill), (f"decode 32 x {decode_ctx + 1}", decode)):
        timed(batch, 3)
        for cond in ("alone", "after 1 s idle", "busy thread", "chatty thread", "bursty thread",
                     "bursty thread, switch interval 0.2 ms", "sustained 3 s"):
            stop = threading.Event()
            helper = {"busy thread": busy, "chatty thread": chatty}.get(cond, bursty if "bursty" in cond else None)
            interval = sys.getswitchinterval()
            if "switch interval" in cond:
                sys.setswitchinterval(2e-4)
            t = threading.Thread(target=helper, args=(stop,), daemon=True) if helper else None
            if t:
                t.start()
            with _Nvml() as clock:
                if cond == "sustained 3 s":
                    one = statistics.median(timed(batch, 3))
                    times = timed(batch, max(10, int(sustained_s / one)))
                else:
                    times = timed(batch, 8, gap_s=1.0 if cond == "after 1 s idle" else 0.0)
            stop.set()
            if t:
                t.join()
            sys.setswitchinterval(interval)
            k = max(1, len(times) // 10)
            rows.append({"step": name, "condition": cond, "steps": len(times), "ms": statistics.median(times) * 1e3,
                         "ms_first_tenth": statistics.median(times[:k]) * 1e3,
                         "ms_last_tenth": statistics.median(times[-k:]) * 1e3,
                         "sm_mhz_median": statistics.median(clock.sm_mhz) if clock.sm_mhz else None,
                         "sm_mhz_min": min(clock.sm_mhz, default=None)})
    engine.close()
    return rows


def probe_async_trace(model: str = "Llama-3.1-8B", device: str = "cuda", prompt: int = 1024) -> dict:
    """Async scheduling's step trace: 48 requests, then one more every 8 steps (prefills among decodes). A decode
    step followed by a prefill step should not be charged that prefill's launch, and the steps should add up to
    the run's wall time."""
    import tempfile

    from backends.engine.config import EngineConfig, SamplingParams, resolve_model
    from backends.engine.engine import LLMEngine

    spec = resolve_model(model)[0]
    trace = Path(tempfile.mkdtemp()) / "trace.jsonl"
    engine = LLMEngine(EngineConfig(model=spec, device=device, max_num_seqs=64, max_num_batched_tokens=2048,
                                    max_model_len=4096, gpu_memory_utilization=0.5, async_scheduling=True,
                                    trace_path=str(trace)))
    params = SamplingParams(max_tokens=64, ignore_eos=True)
    engine.generate([random_ids(spec.vocab_size, prompt) for _ in range(4)], params)          # warm-up
    for i in range(48):
        engine.add_request(random_ids(spec.vocab_size, prompt), params)
    t0, steps, extra = time.perf_counter(), 0, 0
    while engine.has_unfinished():
        engine.step()
        steps += 1
        if steps % 8 == 0 and extra < 24:
            engine.add_request(random_ids(spec.vocab_size, prompt), params)
            extra += 1
    wall = time.perf_counter() - t0
    engine.close()
    recs = [json.loads(line) for line in trace.read_text().splitlines()]
    recs = [r for r in recs if "event" not in r][-steps:]
    followed = {"prefill": [], "decode": []}
    for a, b in zip(recs, recs[1:]):
        if a["num_prefill_tokens"] == 0:
            followed["prefill" if b["num_prefill_tokens"] else "decode"].append(a["time_s"] * 1e3)
    return {"steps": len(recs), "wall_s": wall, "sum_step_s": sum(r["time_s"] for r in recs),
            "decode_ms_before_prefill": statistics.median(followed["prefill"]) if followed["prefill"] else None,
            "decode_ms_before_decode": statistics.median(followed["decode"]) if followed["decode"] else None,
            "prefill_ms": statistics.median(r["time_s"] * 1e3 for r in recs if r["num_prefill_tokens"])}


SPLIT_BATCHES = (1, 8, 16, 32, 48, 64, 65, 72, 80, 96, 112, 128, 129, 144, 160, 192, 224, 256)


def probe_gemv_tma(rows_list=(1, 8, 16)) -> list[dict]:
    import functools
    import itertools

    from backends.engine import gemv, quant
    from types import SimpleNamespace

    out = []
    for name, n, k in (("qkv", 6144, 4096), ("o", 4096, 4096), ("gate_up", 28672, 4096), ("down", 4096, 14336),
                       ("lm_head", 128256, 4096)):
        w = torch.randn(n, k, dtype=torch.bfloat16, device="cuda") * 0.02
        copies = quant._cold_copies(SimpleNamespace(weight=w))
        for rows in rows_list:
            x = torch.randn(rows, k, dtype=torch.bfloat16, device="cuda")

            def timed_us(make) -> float:
                try:
                    return quant._median_s(quant._in_turn([make(c) for c in copies])) * 1e6
                except quant.REFUSALS:
                    return float("nan")
            rec = {"op": name, "rows": rows, "weight_bytes": w.numel() * 2}
            calls = {lib: (lambda c, lib=lib: functools.partial(quant.blas_linear, lib, x, c.weight))
                     for lib in quant.BLAS_LIBRARIES}
            calls["triton"] = lambda c: functools.partial(gemv.gemv, x, c.weight)
            if rows == 1:
                calls["triton_row"] = lambda c: functools.partial(gemv.gemv_row, x, c.weight)
            rec["baseline_us"] = {key: timed_us(v) for key, v in calls.items()}
            rec["tma_us"] = {}
            for bn, bk, stages in itertools.product((16, 32, 64, 128), (64, 128, 256), (3, 4, 6)):
                cfg = dict(BLOCK_N=bn, BLOCK_K=bk, num_stages=stages, num_warps=4)
                rec["tma_us"][f"{bn}x{bk} s{stages}"] = timed_us(
                    lambda c, cfg=cfg: functools.partial(gemv.gemv_tma, x, c.weight, cfg))
            valid = {key: v for key, v in rec["tma_us"].items() if v == v}
            best = min(valid, key=valid.get)
            print(f"gemv {name} rows {rows}: { {key: round(v, 1) for key, v in rec['baseline_us'].items()} }; "
                  f"TMA best {best} {valid[best]:.1f} us (floor at 4.45 TB/s {rec['weight_bytes'] / 4.45e6:.1f})",
                  flush=True)
            out.append(rec)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="probes.json")
    ap.add_argument("--only", default="decode,sustained,prefill,contention,async_trace")
    args = ap.parse_args()
    which = set(args.only.split(","))
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "copy_bandwidth": copy_bandwidth()}
    for name, fn in (("decode", lambda: probe_decode(out["copy_bandwidth"])), ("sustained", probe_sustained),
                     ("prefill", probe_prefill), ("contention", probe_contention), ("async_trace", probe_async_trace),
                     ("rows", probe_rows), ("gemv_tma", probe_gemv_tma), ("stages", lambda: probe_splits(out["copy_bandwidth"])),
                     ("splits", lambda: probe_splits(out["copy_bandwidth"], SPLIT_BATCHES, (1024, 4096), (1, 2, 4, 8, 16),
                                                     (None,))),
                     ("kvlayout", lambda: probe_kvlayout(out["copy_bandwidth"])),
                     ("tail", lambda: probe_tail(out["copy_bandwidth"])),
                     ("warps", lambda: probe_warps(out["copy_bandwidth"]))):
        if name in which:
            t0 = time.perf_counter()
            try:
                out[name] = fn()
            except Exception as e:  # noqa: BLE001 - the other probes still run
                out[name] = {"error": f"{type(e).__name__}: {e}"[:400]}
            print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
            Path(args.out).write_text(json.dumps(out, indent=1))
    for r in out.get("decode", []) if isinstance(out.get("decode"), list) else []:
        print(f"decode hd{r['head_dim']} b{r['batch']} ctx{r['context']} tile{r['tile']}: {r['seconds'] * 1e6:.1f} us, "
              f"{r['fraction_of_copy']:.2f} of copy bw")
    s = out.get("sustained", {})
    if "tflops_first" in s:
        print(f"sustained GEMM: {s['tflops_first']:.0f} -> {s['tflops_last']:.0f} TFLOP/s over {s['calls']} calls; "
              f"by 20ths: {s['tflops_by_20th']}")
        clocks = [x for x in s["nvml"] if "sm_mhz" in x]
        if clocks:
            print("SM MHz / W over time:", [(round(x["t_s"], 2), x["sm_mhz"], round(x["power_w"])) for x in clocks[::10]])
    for r in out.get("prefill", []) if isinstance(out.get("prefill"), list) else []:
        print(f"prefill {r['tokens']} {'eager' if r['eager'] else 'graphs'} (bucket {r['piecewise_tokens']}): "
              f"{r['ms']:.2f} ms")
    for r in out.get("contention", []) if isinstance(out.get("contention"), list) else []:
        print(f"{r['step']}, {r['condition']}: {r['ms']:.2f} ms (first tenth {r['ms_first_tenth']:.2f}, last "
              f"{r['ms_last_tenth']:.2f}); SM {r['sm_mhz_median']} MHz (min {r['sm_mhz_min']})")
    for name in ("stages", "splits"):
        for r in out.get(name, []) if isinstance(out.get(name), list) else []:
            print(f"{name} b{r['batch']} ctx{r['context']} splits{r['splits']}{'*' if r['default_splits'] else ''} "
                  f"stages{r['stages']}: {r['seconds'] * 1e6:.1f} us, {r['fraction_of_copy']:.2f} of copy bw")
    for r in out.get("tail", []) if isinstance(out.get("tail"), list) else []:
        print(f"tail b{r['batch']} ctx{r['context']} tail{r['tail']} splits{r['splits']}: {r['seconds'] * 1e6:.1f} us, "
              f"{r['fraction_of_copy']:.2f} of copy bw")
    for r in out.get("warps", []) if isinstance(out.get("warps"), list) else []:
        if "error" in r:
            print(f"warps b{r['batch']} splits{r['splits']} {r['launch']}: {r['error']}")
            continue
        print(f"warps b{r['batch']} splits{r['splits']}{'*' if r['default_splits'] else ''} {r['launch']}: "
              f"{r['seconds'] * 1e6:.1f} us, {r['fraction_of_copy']:.2f} of copy bw")
    kv = out.get("kvlayout", {})
    if isinstance(kv, dict) and "rows" in kv:
        print("read bandwidth (TB/s):", {k: round(v / 1e12, 2) for k, v in kv["read_bandwidth"].items()},
              f"copy {out['copy_bandwidth'] / 1e12:.2f}")
        for r in kv["rows"]:
            print(f"kvlayout b{r['batch']} block{r['block_size']} {r['layout']}-major, {r['order']} order: "
                  f"{r['seconds'] * 1e6:.1f} us, {r['fraction_of_copy']:.2f} of copy bw")
    rows = out.get("rows", {})
    for r in rows.get("gemms", []) if isinstance(rows, dict) else []:
        print(f"GEMM {r['m']}x{r['n']}x{r['k']} {r['rows']} rows: bf16 {r['bf16_ms']:.3f} ms ({r['bf16_tflops']:.0f} "
              f"TFLOP/s), fp8 {r['fp8_ms']:.3f} ms ({r['fp8_tflops']:.0f})")
    for r in rows.get("prefills", []) if isinstance(rows, dict) else []:
        print(f"prefill {r['tokens']} {r['ids']} ids: {r['ms']:.2f} ms")
    if isinstance(out.get("async_trace"), dict) and "steps" in out["async_trace"]:
        print("async trace:", {k: round(v, 3) if isinstance(v, float) else v for k, v in out["async_trace"].items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
