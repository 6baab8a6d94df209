"""All-reduce and all-gather over message sizes, one process per GPU over NCCL (gloo on the CPU),
launched with multiprocessing's spawn so no torchrun is needed. Eager timings come first; small
all-reduces are then also timed under CUDA-graph replay when capture works on every rank."""
from __future__ import annotations

import multiprocessing
import os
import queue as queue_lib
import socket
import statistics
import time
from datetime import timedelta
from typing import Optional

from profilers.errors import ProfilerError

# NVLink multicast (NVLS) can put a shared host's GPUs out of service: keep it off in NCCL, PyTorch's
# symmetric memory and NVSHMEM, in this process and, explicitly, in every child.
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
GRAPH_MAX_BYTES = 4 << 20           # graphs matter for latency-bound (small) messages only


def _iterations(nbytes: int, device: str) -> int:
    """Calls per timed batch. Every rank must issue the same number of collectives, so this depends
    on the size alone, never on a rank's own measurement."""
    if device == "cpu":
        return 5
    if nbytes <= 16 << 20:
        return 20
    return 10 if nbytes <= 256 << 20 else 5


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


def _timer(device: str):
    from profilers.timing import CpuTimer, CudaTimer

    return CudaTimer(repeats=3) if device == "cuda" else CpuTimer(repeats=3)


def _sweep(dist, torch, op_name: str, sizes: list[int], device, timer, world: int,
           device_kind: str) -> list[float]:
    """This rank's median seconds per call for each message size (bf16 messages)."""
    from profilers.timing import rotation_sets

    out = []
    for nbytes in sizes:
        elements = max(world, nbytes // 2 // world * world)       # divisible for all-gather
        n_sets = rotation_sets(2 * elements, 60 << 20, factor=2, max_sets=8)
        if op_name == "all_reduce":
            bufs = [(torch.randn(elements, dtype=torch.bfloat16, device=device),) for _ in range(n_sets)]

            def call(i):
                dist.all_reduce(bufs[i][0])
        else:
            gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
            bufs = [(torch.empty(elements, dtype=torch.bfloat16, device=device),
                     torch.randn(elements // world, dtype=torch.bfloat16, device=device))
                    for _ in range(n_sets)]

            def call(i):
                gather(bufs[i][0], bufs[i][1])
        iters = _iterations(nbytes, device_kind)

        def batch():
            for j in range(iters):
                call(j % n_sets)
        batch()                                                 # warm-up: buffers registered, channels up
        timer.synchronize()
        out.append(statistics.median(timer.elapsed_s(batch) for _ in range(timer.repeats)) / iters)
    return out


def _graph_sweep(dist, torch, sizes: list[int], device, timer) -> Optional[list[float]]:
    """Median seconds per all-reduce under CUDA-graph replay, or None when any rank failed to capture
    (the ranks agree through an eager all-reduce before anyone replays, so no rank waits alone)."""
    out = []
    for nbytes in sizes:
        buf = torch.randn(max(1, nbytes // 2), dtype=torch.bfloat16, device=device)
        iters = _iterations(nbytes, "cuda")

        def batch():
            for _ in range(iters):
                dist.all_reduce(buf)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            batch()
        torch.cuda.current_stream().wait_stream(side)
        # Thread-local capture mode: NCCL's watchdog thread may query events while this thread captures.
        graph = timer.capture(batch, capture_error_mode="thread_local")
        ok = torch.tensor([0.0 if graph is None else 1.0], device=device)
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if ok.item() < 1.0:
            return None
        graph.replay()
        out.append(statistics.median(timer.elapsed_s(graph.replay) for _ in range(timer.repeats)) / iters)
    return out


def _worker(rank: int, world: int, port: int, device_kind: str, sizes: list[int], results) -> None:
    os.environ.update(SAFE_ENV)
    try:
        import torch
        import torch.distributed as dist

        if device_kind == "cuda":
            torch.cuda.set_device(rank)
            device, backend = torch.device("cuda", rank), "nccl"
            extra = {"device_id": device}       # eager communicator creation: init errors surface here
        else:
            device, backend, extra = torch.device("cpu"), "gloo", {}
        try:
            dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                    world_size=world, timeout=timedelta(seconds=120), **extra)
            probe = torch.ones(1, device=device)
            dist.all_reduce(probe)
            if probe.item() != world:
                raise RuntimeError(f"all-reduce of ones gave {probe.item()}, expected {world}")
        except Exception as exc:
            message = f"{backend.upper()} init failed on {world} processes: {_one_line(exc)}"
            results.put(("error", rank, message))
            return
        timer = _timer(device_kind)

        def worst(per_rank: list[float]) -> list[float]:
            # A collective is as slow as its slowest rank.
            t = torch.tensor(per_rank, dtype=torch.float64, device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            return t.tolist()

        eager = {op: worst(_sweep(dist, torch, op, sizes, device, timer, world, device_kind))
                 for op in ("all_reduce", "all_gather")}
        if rank == 0:
            results.put(("eager", eager))
        if device_kind == "cuda":
            small = [s for s in sizes if s <= GRAPH_MAX_BYTES]
            graph = _graph_sweep(dist, torch, small, device, timer)
            graph = worst(graph) if graph is not None else None
            if rank == 0:
                results.put(("graph", {"sizes": small, "all_reduce": graph}))
        dist.destroy_process_group()
        if rank == 0:
            results.put(("done", None))
    except Exception as exc:
        results.put(("error", rank, _one_line(exc)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_collectives(n_procs: int, sizes: list[int], device: str = "cuda",
                        timeout_s: float = 300.0) -> dict:
    """Curves for one group size: {"n", "sizes", "all_reduce", "all_gather", "all_reduce_graph", "notes"}
    with seconds per call aligned with sizes. Raises ProfilerError on a failed init, a crash or a hang."""
    os.environ.update(SAFE_ENV)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, n_procs, port, device, sizes, results), daemon=True)
             for r in range(n_procs)]
    for p in procs:
        p.start()
    out = {"n": n_procs, "sizes": list(sizes), "all_reduce_graph": None, "notes": []}
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                kind, *payload = results.get(timeout=1.0)
            except queue_lib.Empty:
                if time.monotonic() > deadline:
                    if "all_reduce" in out:             # eager numbers are in; only graphs hung
                        out["notes"].append("all-reduce under CUDA graphs timed out; eager curves kept")
                        return out
                    raise ProfilerError(f"collective benchmark on {n_procs} processes timed out after "
                                        f"{timeout_s:.0f} s") from None
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead and "all_reduce" in out:        # died during graph capture: eager numbers are safe
                    out["notes"].append(f"a worker died (exit {dead[0].exitcode}) during CUDA-graph timing; "
                                        "eager curves kept")
                    return out
                if dead:
                    raise ProfilerError(f"collective benchmark: a worker died with exit code "
                                        f"{dead[0].exitcode} on {n_procs} processes") from None
                continue
            if kind == "error":
                rank, message = payload
                raise ProfilerError(f"collective benchmark, rank {rank}: {message}")
            if kind == "eager":
                out.update(payload[0])
                # Graph capture gets a short leash of its own once the eager numbers are safe.
                deadline = min(deadline, time.monotonic() + 60.0)
            elif kind == "graph":
                graph = payload[0]
                if graph["all_reduce"] is None:
                    out["notes"].append("all-reduce CUDA-graph capture failed on some rank")
                else:
                    out["all_reduce_graph"] = {"sizes": graph["sizes"], "seconds": graph["all_reduce"]}
            elif kind == "done":
                return out
    finally:
        for p in procs:
            p.join(timeout=10)
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
