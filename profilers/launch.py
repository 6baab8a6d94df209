"""Kernel-launch overhead: the time per tiny kernel when many are issued back to back, eagerly and
under CUDA-graph replay. The kernel itself does almost nothing, so what is left is the launch cost."""
from __future__ import annotations

import statistics

from profilers.context import BenchContext


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
    return result
