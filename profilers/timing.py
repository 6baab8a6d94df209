"""Timing of one operation: warm-up, median of repeats, input sets rotated so that the cache does not
flatter the result. CUDA uses events and, where capture works, CUDA-graph replay of a batch of calls
(so launch gaps do not inflate microsecond kernels); the CPU uses perf_counter."""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Timing:
    seconds: float          # median time of one call
    mode: str               # "graph" (CUDA-graph replay), "eager" (CUDA events) or "cpu" (perf_counter)
    calls: int              # calls per timed batch


def rotation_sets(bytes_per_set: float, cache_bytes: float, factor: float = 4.0, max_sets: int = 32) -> int:
    """How many distinct input sets to cycle through so that together they exceed `factor` x the
    cache: a set touched again has been evicted by the others in between."""
    if bytes_per_set <= 0:
        return 1
    return int(min(max_sets, max(1, math.ceil(factor * cache_bytes / bytes_per_set))))


class Timer:
    """Shared knobs. `target_s`: how long one timed batch should run, so timer resolution and launch
    jitter stay small against it; `max_calls`: cap on calls per batch (graph size, warm-up cost)."""

    mode = "cpu"

    def __init__(self, warmup: int = 3, repeats: int = 10, target_s: float = 2e-3, max_calls: int = 1000):
        self.warmup = warmup
        self.repeats = repeats
        self.target_s = target_s
        self.max_calls = max_calls

    def _calls(self, single_s: float, n_sets: int) -> int:
        calls = math.ceil(self.target_s / max(single_s, 1e-9))
        # Every input set should take part in a batch, else the rotation does nothing.
        return int(min(self.max_calls, max(calls, n_sets, 1)))

    def time(self, fn: Callable[[int], object], n_sets: int = 1) -> Timing:
        """Median seconds of one call of fn(set_index)."""
        raise NotImplementedError

    def elapsed_s(self, run: Callable[[], object]) -> float:
        """Seconds of one run(), start to finish of the work it queued."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for queued device work (nothing to wait for on the CPU)."""


class CpuTimer(Timer):
    mode = "cpu"

    def elapsed_s(self, run):
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    def time(self, fn, n_sets=1):
        for i in range(max(self.warmup, n_sets)):      # touch every set once: first-touch page faults
            fn(i % n_sets)
        calls = self._calls(self.elapsed_s(lambda: fn(0)), n_sets)

        def batch():
            for j in range(calls):
                fn(j % n_sets)

        samples = [self.elapsed_s(batch) for _ in range(self.repeats)]
        return Timing(statistics.median(samples) / calls, self.mode, calls)


class CudaTimer(Timer):
    mode = "eager"

    def __init__(self, *args, use_graphs: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        import torch

        self.torch = torch
        self.use_graphs = use_graphs

    def synchronize(self):
        self.torch.cuda.synchronize()

    def elapsed_s(self, run):
        cuda = self.torch.cuda
        start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def capture(self, body: Callable[[], object], capture_error_mode: str = "global"):
        """A CUDA graph of body(), or None when the work cannot be captured (then time it eagerly)."""
        cuda = self.torch.cuda
        try:
            graph = cuda.CUDAGraph()
            with cuda.graph(graph, capture_error_mode=capture_error_mode):
                body()
            return graph
        except Exception:
            # A failed capture leaves the stream in an error state only until it ends; make sure of it.
            cuda.synchronize()
            return None

    def time(self, fn, n_sets=1):
        cuda = self.torch.cuda
        # Warm up on a side stream: library handles and workspaces get created there, off the
        # capture stream, as graph capture requires.
        side = cuda.Stream()
        side.wait_stream(cuda.current_stream())
        with cuda.stream(side):
            for i in range(max(self.warmup, n_sets)):
                fn(i % n_sets)
        cuda.current_stream().wait_stream(side)
        calls = self._calls(self.elapsed_s(lambda: fn(0)), n_sets)

        def batch():
            for j in range(calls):
                fn(j % n_sets)

        graph: Optional[object] = self.capture(batch) if self.use_graphs else None
        run = graph.replay if graph is not None else batch
        run()
        samples = [self.elapsed_s(run) for _ in range(self.repeats)]
        return Timing(statistics.median(samples) / calls, "eager" if graph is None else "graph", calls)


def make_timer(device: str, quick: bool) -> Timer:
    if device == "cuda":
        return CudaTimer(warmup=3, repeats=7 if quick else 15, target_s=1e-3 if quick else 3e-3)
    return CpuTimer(warmup=1, repeats=3, target_s=2e-3, max_calls=50)
