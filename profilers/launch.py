"""Kernel-launch overhead: the time per tiny kernel when many are issued back to back, eagerly and
under CUDA-graph replay. The kernel itself does almost nothing, so what is left is the launch cost.

An engine's eager step issues more than bare launches: each kernel's Python, tensor views and allocations, and
Triton's launcher with its many arguments. So the built-in engine's own eager step is timed too (a Llama-3.2-1B
layer shape, 16 fresh tokens, at two layer counts: the slope is one layer's host time), per kernel the cost model
counts in such a layer: its host issue interval on this machine."""
from __future__ import annotations

import contextlib
import io
import statistics
import time

from profilers.context import BenchContext


def engine_eager_s_per_kernel(layers: tuple[int, int] = (2, 6), tokens: int = 16, reps: int = 9,
                              device: str = "cuda") -> float | None:
    """Seconds per priced kernel of an eager fresh-prompt step of the built-in engine (None where it cannot run)."""
    from backends.engine.config import EngineConfig, SamplingParams
    from backends.engine.engine import LLMEngine
    from backends.engine.scheduler import ScheduledBatch
    from backends.engine.sequence import Sequence
    from planner.catalog import load_model
    from planner.costmodel import KERNELS_PER_LAYER, VARLEN_PREFILL_KERNELS

    step_s = []
    for n in layers:
        spec = load_model("Llama-3.2-1B").model_copy(update={"num_layers": n})
        with contextlib.redirect_stderr(io.StringIO()):       # its start-up record is not the profiler's output
            engine = LLMEngine(EngineConfig(model=spec, device=device, max_num_seqs=4, max_num_batched_tokens=256,
                                            max_model_len=512, num_kv_blocks=64, cuda_graphs=False))
        seq = Sequence("eager", list(range(1, tokens + 1)), SamplingParams(max_tokens=1))
        engine.block_manager.allocate(seq, tokens)
        batch = ScheduledBatch([(seq, tokens)])
        times = []
        for _ in range(reps + 2):
            t0 = time.perf_counter()
            engine.runner.run(batch)
            times.append(time.perf_counter() - t0)
        engine.close()
        step_s.append(statistics.median(times[2:]))
    per_layer = (step_s[1] - step_s[0]) / (layers[1] - layers[0])
    return per_layer / (KERNELS_PER_LAYER + VARLEN_PREFILL_KERNELS) if per_layer > 0 else None


def measure_launch(ctx: BenchContext, n_kernels: int) -> dict:
    import torch

    x = torch.randn(1, device=ctx.device)

    def burst():
        for _ in range(n_kernels):
            x.add_(1.0)

    timer = ctx.timer
    burst()                                         # warm-up: kernel load, allocator, dispatch caches
    timer.synchronize()
    eager = statistics.median(timer.elapsed_s(burst) for _ in range(timer.repeats))
    result = {"n_kernels": n_kernels, "eager_s_per_kernel": eager / n_kernels, "graph_s_per_kernel": None}
    if ctx.device == "cuda":
        graph = timer.capture(burst)
        if graph is None:
            ctx.note("launch: CUDA graph capture failed; graph_kernel_overhead_s keeps its default")
        else:
            graph.replay()
            replay = statistics.median(timer.elapsed_s(graph.replay) for _ in range(timer.repeats))
            result["graph_s_per_kernel"] = replay / n_kernels
        try:
            result["engine_eager_s_per_kernel"] = engine_eager_s_per_kernel()
        except Exception as e:  # noqa: BLE001 - the bare launch figures still stand
            ctx.note(f"launch: the engine's eager step could not be timed ({type(e).__name__}: {e})"[:300])
    return result
