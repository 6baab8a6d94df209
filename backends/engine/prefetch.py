"""A layer's o_proj weight read into L2 while its decode attention runs.

At small decode batches attention and its merge are latency-bound (a few MB of KV per layer on an H200, ~9 us)
and the o_proj GEMM right after them streams its weight (33.5 MB for Llama-3.1-8B) at ~0.63 of copy bandwidth,
the furthest below the floor of any linear. A side stream reads that weight into L2 (50 MB on H100/H200)
beside the attention kernels, so the GEMM finds it there. Only weights that fit well inside L2, and only in the
decode CUDA graphs of batches up to PLAN_ENGINE_PREFETCH_MAX_BATCH (0: never); larger batches' attention needs
the bandwidth itself.
"""
from __future__ import annotations

import contextlib
import os

import torch

from .kernels import l2_prefetch, l2_prefetch_programs

MAX_BATCH = int(os.environ.get("PLAN_ENGINE_PREFETCH_MAX_BATCH", "16"))
EVICT = os.environ.get("PLAN_ENGINE_PREFETCH_EVICT", "")       # "" or "evict_last"
L2_SHARE = 0.75        # of the L2 a prefetched weight may take: the attention's K/V pass through it too


class L2Prefetch:
    def __init__(self, device: torch.device, weight: torch.Tensor):
        self.stream = torch.cuda.Stream(device)
        self.sink = torch.zeros(l2_prefetch_programs(weight), dtype=torch.int32, device=device)

    @classmethod
    def for_o_proj(cls, model: torch.nn.Module, device: torch.device) -> L2Prefetch | None:
        """None where it does not apply: off, not CUDA, or the weight would not fit L2."""
        weight = model.model.layers[0].self_attn.o_proj.weight
        if MAX_BATCH <= 0 or device.type != "cuda" or (weight.numel() * weight.element_size()) % 4:
            return None
        l2_bytes = torch.cuda.get_device_properties(device).L2_cache_size
        if weight.numel() * weight.element_size() > L2_SHARE * l2_bytes:
            return None
        return cls(device, weight)

    @contextlib.contextmanager
    def beside(self, weight: torch.Tensor):
        """The body's kernels run on the current stream while `weight` is read into L2 on the side stream;
        what the current stream queues after the body waits for the prefetch (inside a CUDA graph capture too)."""
        main = torch.cuda.current_stream()
        self.stream.wait_stream(main)
        with torch.cuda.stream(self.stream):
            l2_prefetch(weight, self.sink, EVICT)
        try:
            yield
        finally:
            main.wait_stream(self.stream)
