"""Attention timings: causal prefill over sequence lengths and single-token decode over
(batch, context length). Uses torch SDPA restricted to fused kernels (never the math fallback, which
materializes the score matrix and would time something no engine runs)."""
from __future__ import annotations

from profilers.context import BenchContext
from profilers.sweeps import AttentionShape
from profilers.timing import rotation_sets

IMPL_NOTE = ("torch SDPA (flash / memory-efficient / cuDNN kernels only) on a contiguous KV cache; "
             "backends/engine attention was not used")


def _fused_sdpa(ctx: BenchContext, probe: tuple, causal: bool):
    """An SDPA call over (q, k, v) using fused kernels only, with grouped KV heads passed as they are
    when a fused kernel accepts them, else repeated to the query heads (more bytes read: noted)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]

    def grouped(q, k, v):
        with sdpa_kernel(backends):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)

    def repeated(q, k, v):
        group = q.shape[1] // k.shape[1]
        with sdpa_kernel(backends):
            return F.scaled_dot_product_attention(q, k.repeat_interleave(group, 1),
                                                  v.repeat_interleave(group, 1), is_causal=causal)
    try:
        grouped(*probe)
        return grouped
    except RuntimeError:
        ctx.note("attention: no fused SDPA kernel accepted grouped KV heads; KV repeated to the query "
                 "heads inside the timed call")
        return repeated


def measure_prefill(ctx: BenchContext, shape: AttentionShape, seq: int, batch: int = 1) -> dict:
    import torch

    h, hkv, d = shape.heads, shape.kv_heads, shape.head_dim
    set_bytes = 2 * batch * seq * d * (2 * h + 2 * hkv)       # q, o, k, v in bf16

    def make():
        return (torch.randn(batch, h, seq, d, dtype=torch.bfloat16, device=ctx.device),
                torch.randn(batch, hkv, seq, d, dtype=torch.bfloat16, device=ctx.device),
                torch.randn(batch, hkv, seq, d, dtype=torch.bfloat16, device=ctx.device))
    sets = [make() for _ in range(rotation_sets(set_bytes, ctx.cache_bytes, max_sets=8))]
    sdpa = _fused_sdpa(ctx, sets[0], causal=True)
    timing = ctx.timer.time(lambda i: sdpa(*sets[i]), len(sets))
    del sets
    ctx.release()
    # Causal: half of the S x S score matrix, two matmuls (QK^T, PV) of 2*S*S*D each per head.
    flops = 2.0 * batch * h * seq * seq * d
    return {"batch": batch, "seq": seq, "heads": h, "kv_heads": hkv, "head_dim": d,
            "seconds": timing.seconds, "flops": flops, "timing": timing.mode}


def measure_decode(ctx: BenchContext, shape: AttentionShape, batch: int, context: int) -> dict:
    import torch

    h, hkv, d = shape.heads, shape.kv_heads, shape.head_dim
    kv_bytes = 2 * 2 * batch * hkv * context * d              # K and V, bf16: what decode must read

    def make():
        return (torch.randn(batch, h, 1, d, dtype=torch.bfloat16, device=ctx.device),
                torch.randn(batch, hkv, context, d, dtype=torch.bfloat16, device=ctx.device),
                torch.randn(batch, hkv, context, d, dtype=torch.bfloat16, device=ctx.device))
    sets = [make() for _ in range(rotation_sets(kv_bytes, ctx.cache_bytes, max_sets=64))]
    sdpa = _fused_sdpa(ctx, sets[0], causal=False)
    timing = ctx.timer.time(lambda i: sdpa(*sets[i]), len(sets))
    del sets
    ctx.release()
    return {"batch": batch, "context": context, "heads": h, "kv_heads": hkv, "head_dim": d,
            "seconds": timing.seconds, "kv_bytes": kv_bytes, "flops": 4.0 * batch * h * context * d,
            "timing": timing.mode}
