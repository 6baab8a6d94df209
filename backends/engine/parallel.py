"""Tensor-parallel state of this process: rank, world size, how checkpoint matrices split, the collectives.

One process per device. Model collectives (the all-reduce after attention and MLP) go through the default
group: NCCL on CUDA (capturable in CUDA graphs), gloo on CPU. Rank 0's per-step inputs travel as pickled host
objects through a separate gloo group, so they never touch the GPU stream.
"""
from __future__ import annotations

import os
import threading

import torch
import torch.distributed as dist

# NVLink multicast (NVLS) is unreliable on the shared GPU hosts: keep it off in every rank.
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}

_rank, _size, _control = 0, 1, None


def init(rank: int, size: int, port: int, device: torch.device) -> None:
    global _rank, _size, _control
    os.environ.update(SAFE_ENV)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size,
                            device_id=device if device.type == "cuda" else None)
    _control = dist.new_group(backend="gloo") if backend == "nccl" else dist.group.WORLD
    _rank, _size = rank, size


def rank() -> int:
    return _rank


def size() -> int:
    return _size


def split(n: int) -> tuple[int, int]:
    """(start, length) of this rank's equal share of n rows or columns."""
    if n % _size:
        raise ValueError(f"dimension {n} does not split evenly over tensor parallel size {_size}")
    part = n // _size
    return _rank * part, part


def split_heads(num_heads: int, head_dim: int) -> tuple[int, int]:
    """(start row, rows) of this rank's heads; with more ranks than heads each rank keeps one, replicated."""
    if num_heads >= _size:
        start, n = split(num_heads)
        return start * head_dim, n * head_dim
    if _size % num_heads:
        raise ValueError(f"{num_heads} KV heads cannot be replicated evenly over {_size} ranks")
    # Query heads are split evenly too, so rank r's query heads all use KV head r * num_heads // size.
    return (_rank * num_heads // _size) * head_dim, head_dim


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    if _size > 1:
        dist.all_reduce(x)
    return x


def broadcast(obj=None):
    """Rank 0's `obj` on every rank (host pickling over gloo)."""
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_control)
    return box[0]


def min_over_ranks(value: int) -> int:
    t = torch.tensor([value], dtype=torch.int64)
    if _size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MIN, group=_control)
    return int(t)


def shutdown(timeout_s: float = 10.0) -> None:
    """Destroys the process groups. NCCL's teardown can hang after collectives were captured in CUDA graphs
    (pytorch#115388), so it gets `timeout_s` in a daemon thread; the process exiting frees the rest."""
    global _rank, _size, _control
    if dist.is_initialized():
        t = threading.Thread(target=dist.destroy_process_group, daemon=True, name="destroy-process-group")
        t.start()
        t.join(timeout_s)
    _rank, _size, _control = 0, 1, None
