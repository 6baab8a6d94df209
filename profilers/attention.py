"""Attention timings: causal prefill over sequence lengths and single-token decode over
(batch, context length). Times the engine's own kernels (backends/engine/attention.py: prefill_attention,
and decode_attention over a paged KV cache) when they import; else torch SDPA restricted to fused
kernels on a contiguous cache, and says so in the output."""
from __future__ import annotations

from typing import Callable

from profilers.context import BenchContext
from profilers.sweeps import AttentionShape
from profilers.timing import rotation_sets

BLOCK_SIZE = 16                     # the engine's default KV block size (tokens per block)


def _engine():
    """The engine's attention module, or None when it (or its Triton/torch needs) cannot be imported."""
    try:
        from backends.engine import attention
    except Exception:                   # ImportError, or a kernel module failing to build at import
        return None
    return attention


def implementation() -> str:
    if _engine() is not None:
        return ("backends.engine.attention: prefill_attention_varlen (flash attention; prefill_attention, torch "
                f"SDPA, where varlen is unsupported) and decode_attention over a paged KV cache (block size "
                f"{BLOCK_SIZE}, shuffled block tables)")
    return ("torch SDPA (flash / memory-efficient / cuDNN kernels only) on a contiguous KV cache: "
            "backends.engine.attention could not be imported")


def _fused_sdpa(ctx: BenchContext, probe: tuple, causal: bool) -> Callable:
    """Fallback: SDPA over [B,H,S,D] using fused kernels only (never the math path, which materializes
    the score matrix), with grouped KV heads passed as they are when a fused kernel accepts them."""
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
        ctx.note("attention: no fused SDPA kernel accepted grouped KV heads; KV repeated to the query heads")
        return repeated


def measure_prefill(ctx: BenchContext, shape: AttentionShape, seq: int) -> dict:
    """One sequence of `seq` tokens attending causally to itself."""
    import torch

    h, hkv, d = shape.heads, shape.kv_heads, shape.head_dim
    engine = _engine()
    # Engine layout is [S, heads, D]; SDPA's is [1, heads, S, D].
    q_shape, kv_shape = ((seq, h, d), (seq, hkv, d)) if engine else ((1, h, seq, d), (1, hkv, seq, d))

    def make():
        return (torch.randn(q_shape, dtype=torch.bfloat16, device=ctx.device),
                torch.randn(kv_shape, dtype=torch.bfloat16, device=ctx.device),
                torch.randn(kv_shape, dtype=torch.bfloat16, device=ctx.device))
    set_bytes = 2 * seq * d * (2 * h + 2 * hkv)                 # q, out, k, v in bf16
    sets = [make() for _ in range(rotation_sets(set_bytes, ctx.cache_bytes, max_sets=8))]
    if engine and engine.varlen_supported(sets[0][0]):
        # What the engine runs for prefill chunks: one varlen flash call (here over one sequence), GQA native.
        cu = torch.tensor([0, seq], dtype=torch.int32, device=ctx.device)
        scale = d ** -0.5
        op = lambda q, k, v: engine.prefill_attention_varlen(q, k, v, cu, cu, seq, seq, scale)  # noqa: E731
    elif engine:
        scale = d ** -0.5
        op = lambda q, k, v: engine.prefill_attention(q, k, v, scale)     # noqa: E731
    else:
        op = _fused_sdpa(ctx, sets[0], causal=True)
    timing = ctx.timer.time(lambda i: op(*sets[i]), len(sets))
    # Causal: half of the S x S scores; two matmuls (QK^T, PV) of 2*S*S*D FLOPs each per head.
    return {"seq": seq, "heads": h, "kv_heads": hkv, "head_dim": d, "seconds": timing.seconds,
            "flops": 2.0 * h * seq * seq * d, "timing": timing.mode}


def _paged_set(torch, device, batch: int, context: int, shape: AttentionShape):
    """q, a paged K/V cache of `context` tokens per sequence in shuffled blocks, block tables, lengths."""
    blocks_per_seq = -(-context // BLOCK_SIZE)
    n_blocks = batch * blocks_per_seq
    cache_shape = (n_blocks, BLOCK_SIZE, shape.kv_heads, shape.head_dim)
    # Shuffled so sequences' blocks interleave in memory, as they do in a cache that has seen traffic.
    tables = torch.randperm(n_blocks, device=device).to(torch.int32).view(batch, blocks_per_seq)
    return (torch.randn(batch, shape.heads, shape.head_dim, dtype=torch.bfloat16, device=device),
            torch.randn(cache_shape, dtype=torch.bfloat16, device=device),
            torch.randn(cache_shape, dtype=torch.bfloat16, device=device),
            tables, torch.full((batch,), context, dtype=torch.int32, device=device))


def measure_decode(ctx: BenchContext, shape: AttentionShape, batch: int, context: int) -> dict:
    """One new token per sequence attending to `context` cached tokens."""
    import torch

    h, hkv, d = shape.heads, shape.kv_heads, shape.head_dim
    kv_bytes = 2 * 2 * batch * hkv * context * d                # K and V, bf16: what decode must read
    n_sets = rotation_sets(kv_bytes, ctx.cache_bytes, max_sets=64)
    engine = _engine()
    if engine:
        sets = [_paged_set(torch, ctx.device, batch, context, shape) for _ in range(n_sets)]
        splits = engine.decode_num_splits(batch, hkv, torch.device(ctx.device))
        scale = d ** -0.5
        op = lambda q, kc, vc, bt, cl: engine.decode_attention(q, kc, vc, bt, cl, scale, splits)  # noqa: E731
    else:
        sets = [(torch.randn(batch, h, 1, d, dtype=torch.bfloat16, device=ctx.device),
                 torch.randn(batch, hkv, context, d, dtype=torch.bfloat16, device=ctx.device),
                 torch.randn(batch, hkv, context, d, dtype=torch.bfloat16, device=ctx.device))
                for _ in range(n_sets)]
        op = _fused_sdpa(ctx, sets[0], causal=False)
    timing = ctx.timer.time(lambda i: op(*sets[i]), len(sets))
    return {"batch": batch, "context": context, "heads": h, "kv_heads": hkv, "head_dim": d,
            "seconds": timing.seconds, "kv_bytes": kv_bytes, "flops": 4.0 * batch * h * context * d,
            "timing": timing.mode}
