"""GPU memory model: weights, activations, runtime overhead, and what is left for the KV cache.

Follows how vLLM (and the built-in engine) size the cache: usable = capacity x gpu_memory_utilization;
weights and the activation peak of a profiling forward pass at max_num_batched_tokens come off the top,
the rest becomes KV blocks.
"""
from __future__ import annotations

import math

from planner.costmodel import ACT_BYTES, FP32_BYTES, WEIGHT_BYTES_PER_PARAM, Deployment
from planner.params import param_counts
from planner.schemas import HardwareProfile, MemoryBreakdown

# Embeddings, LM head and norms stay in 16-bit when linear layers are quantized (vLLM does the same).
HIGH_PRECISION_BYTES = 2.0


def weight_bytes_per_gpu(d: Deployment) -> float:
    """Weights on the GPU of the largest pipeline stage."""
    pc = param_counts(d.model)
    linear = pc.total - pc.embedding - pc.lm_head - pc.norms
    per_stage_layers = d.layers_per_stage / d.model.num_layers
    layers_bytes = (linear * WEIGHT_BYTES_PER_PARAM[d.weight_dtype] + pc.norms * HIGH_PRECISION_BYTES)
    layers_bytes *= per_stage_layers / d.tp
    # Vocabulary-parallel embedding and LM head; with pp > 1 they sit on the first and last stages.
    ends = pc.embedding + pc.lm_head if d.pp == 1 else max(pc.embedding, pc.lm_head)
    return layers_bytes + ends * HIGH_PRECISION_BYTES / d.tp


def activation_bytes(d: Deployment, max_num_batched_tokens: int, max_num_seqs: int) -> float:
    """Peak transient memory of one forward pass at the token budget (the profiling run)."""
    m = d.model
    t = max_num_batched_tokens
    if m.is_moe:
        inter = (m.moe_intermediate_size or m.intermediate_size) * m.num_experts_per_tok / d.tp
    else:
        inter = m.intermediate_size / d.tp
    # residual + normed input + qkv + attention out, and the MLP's gate_up output plus activation
    per_token = (4 * m.hidden_size + 3 * inter) * ACT_BYTES
    logits = min(max_num_seqs, t) * m.vocab_size / d.tp * FP32_BYTES
    return t * per_token + logits


def memory_breakdown(hw: HardwareProfile, d: Deployment, max_num_batched_tokens: int, max_num_seqs: int,
                     gpu_memory_utilization: float, context_tokens: float, block_size: int = 16
                     ) -> MemoryBreakdown:
    """Per-GPU memory and the KV capacity; `context_tokens` is a sequence's mean footprint."""
    capacity = hw.memory_bytes
    usable = capacity * gpu_memory_utilization
    weights = weight_bytes_per_gpu(d)
    act = activation_bytes(d, max_num_batched_tokens, max_num_seqs)
    overhead = hw.efficiency.runtime_overhead_bytes
    kv = usable - weights - act - overhead
    per_token = d.kv_bytes_per_token()
    blocks = max(0, math.floor(kv / (per_token * block_size)))
    kv_tokens = blocks * block_size
    blocks_per_seq = max(1, math.ceil(context_tokens / block_size))
    max_seqs = min(max_num_seqs, blocks // blocks_per_seq)
    fits = kv_tokens >= context_tokens and max_seqs >= 1
    return MemoryBreakdown(
        capacity_bytes=capacity, usable_bytes=usable, weights_bytes=weights, activation_bytes=act,
        runtime_overhead_bytes=overhead, kv_cache_bytes=kv, kv_bytes_per_token=per_token,
        kv_capacity_tokens=kv_tokens, max_concurrent_seqs=max_seqs, fits=fits,
        shortfall_bytes=0.0 if fits else max(0.0, per_token * context_tokens - kv),
    )
