"""Element-wise kernels of the decoder: RMSNorm (+ residual add), SiLU-and-mul, q/k-norm + RoPE + KV store.

Each op is one Triton kernel on CUDA (at batch 1 a decode step is ~300 kernels, so launch count matters even
under CUDA graphs) and a plain torch composition elsewhere, which is also the reference the tests compare
the Triton kernels against (under TRITON_INTERPRET=1 on CPU).
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the torch paths below are used
    triton = None


def use_triton(x: torch.Tensor) -> bool:
    return triton is not None and x.is_cuda


# --------------------------------------------------------------------------- RMSNorm
def rms_norm_torch(x, weight, eps, residual=None):
    if residual is not None:
        x = x + residual          # in the model dtype, as Hugging Face does
        residual = x
    xf = x.float()
    out = weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return out if residual is None else (out, residual)


if triton is not None:
    @triton.jit
    def _rms_norm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, stride_x, stride_r, stride_o, n, eps,
                         HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < n
        x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
        if HAS_RES:
            x = x + tl.load(res_ptr + row * stride_r + cols, mask=mask, other=0.0)
            tl.store(res_ptr + row * stride_r + cols, x, mask=mask)   # the new residual, in place
        xf = x.to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(xf * xf, axis=0) / n + eps)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0)
        y = (xf * rstd).to(x.dtype) * w
        tl.store(out_ptr + row * stride_o + cols, y, mask=mask)


def rms_norm_triton(x, weight, eps, residual=None):
    """x: [T, n]. With residual: residual += x in place and the norm is of the sum; returns (out, residual)."""
    out = torch.empty_like(x)
    n = x.shape[-1]
    block = triton.next_power_of_2(n)
    _rms_norm_kernel[(x.shape[0],)](x, residual if residual is not None else x, weight, out, x.stride(0),
                                    residual.stride(0) if residual is not None else 0, out.stride(0), n, eps,
                                    HAS_RES=residual is not None, BLOCK=block, num_warps=min(16, max(1, block // 256)))
    return out if residual is None else (out, residual)


def rms_norm(x, weight, eps, residual=None):
    return (rms_norm_triton if use_triton(x) else rms_norm_torch)(x, weight, eps, residual)


# --------------------------------------------------------------------------- SiLU(gate) * up
def silu_and_mul_torch(x):
    gate, up = x.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up


if triton is not None:
    @triton.jit
    def _silu_and_mul_kernel(x_ptr, out_ptr, stride_x, stride_o, n, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < n
        gate = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        up = tl.load(x_ptr + row * stride_x + n + cols, mask=mask, other=0.0).to(tl.float32)
        y = gate / (1.0 + tl.exp(-gate)) * up
        tl.store(out_ptr + row * stride_o + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul_triton(x):
    """x: [T, 2n] = [gate | up] (the fused gate_up projection); returns [T, n]."""
    n = x.shape[-1] // 2
    out = torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)
    block = 1024
    _silu_and_mul_kernel[(x.shape[0], triton.cdiv(n, block))](x, out, x.stride(0), out.stride(0), n, BLOCK=block)
    return out


def silu_and_mul(x):
    return (silu_and_mul_triton if use_triton(x) else silu_and_mul_torch)(x)


# --------------------------------------------------------------------------- copy
if triton is not None:
    # The length varies every step: not specialised on it (a new variant would compile mid-serving). It comes
    # in 16-element units so the compiler still sees a multiple of 16: the masked loads and stores stay vector
    # wide (an opaque n made them one element each, ~0.9 TB/s on an H200).
    @triton.jit(do_not_specialize=["n16"])
    def _copy_kernel(src_ptr, dst_ptr, n16, BLOCK: tl.constexpr):
        n = n16 * 16
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(dst_ptr + offs, tl.load(src_ptr + offs, mask=mask), mask=mask)


def copy_into(dst: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """dst.copy_(src) for contiguous tensors of one dtype (and a multiple of 16 elements: attention outputs are
    tokens x heads x head_dim), as a kernel launch on CUDA: torch's device-to-device
    copy goes through cudaMemcpyAsync, whose host cost (~45 us per call on the H200 hosts here) was the largest
    host item of a piecewise-graph step (one per layer)."""
    n = dst.numel()
    if use_triton(dst) and dst.is_contiguous() and src.is_contiguous() and dst.dtype == src.dtype and n % 16 == 0:
        block = 2048
        _copy_kernel[(triton.cdiv(n, block),)](src, dst, n // 16, BLOCK=block)
        return dst
    return dst.copy_(src)


# --------------------------------------------------------------------------- q/k norm + RoPE + KV store
def rope_cos_sin(head_dim: int, max_len: int, theta: float, scaling: dict | None, device) -> torch.Tensor:
    """[max_len, head_dim] fp32: cos of the head_dim/2 frequencies, then their sin (rotate-half RoPE)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim)
    if scaling and scaling.get("rope_type", scaling.get("type")) == "llama3":
        # Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a smooth ramp between.
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * torch.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        inv_freq = torch.where(medium, smoothed, scaled)
    freqs = torch.outer(torch.arange(max_len, device=device).float(), inv_freq)
    return torch.cat([freqs.cos(), freqs.sin()], dim=-1)


def qk_norm_rope_store_torch(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping,
                             q_norm_w=None, k_norm_w=None, eps=1e-6, kv_scale=1.0):
    if q_norm_w is not None:
        q.copy_(rms_norm_torch(q, q_norm_w, eps))
        k.copy_(rms_norm_torch(k, k_norm_w, eps))
    half = q.shape[-1] // 2
    cos, sin = cos_sin[positions, :half].unsqueeze(1), cos_sin[positions, half:].unsqueeze(1)
    for x in (q, k):
        x1, x2 = x[..., :half].float(), x[..., half:].float()
        x.copy_(torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1))
    store_kv_torch(k, v, k_cache, v_cache, slot_mapping, kv_scale)


def store_kv_torch(k, v, k_cache, v_cache, slot_mapping, kv_scale=1.0):
    if k_cache.dtype != k.dtype:    # fp8 cache: stored divided by its per-tensor scale
        k, v = (k.float() / kv_scale).to(k_cache.dtype), (v.float() / kv_scale).to(v_cache.dtype)
    k_cache.view(-1, *k.shape[1:])[slot_mapping] = k
    v_cache.view(-1, *v.shape[1:])[slot_mapping] = v


if triton is not None:
    @triton.jit
    def _rope_heads(x_ptr, stride_h, num_heads, cos, sin, w_ptr, eps, HALF: tl.constexpr,
                    BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr, HAS_NORM: tl.constexpr):
        """RoPE (after an optional per-head RMSNorm) of all heads of one token, in place; returns the result."""
        h = tl.arange(0, BLOCK_H)[:, None]
        d = tl.arange(0, BLOCK_HALF)[None, :]
        mask = (h < num_heads) & (d < HALF)
        p1 = x_ptr + h * stride_h + d
        x1 = tl.load(p1, mask=mask, other=0.0)
        x2 = tl.load(p1 + HALF, mask=mask, other=0.0)
        dtype = x1.dtype
        x1 = x1.to(tl.float32)
        x2 = x2.to(tl.float32)
        if HAS_NORM:
            rstd = 1.0 / tl.sqrt((tl.sum(x1 * x1, axis=1) + tl.sum(x2 * x2, axis=1)) / (2 * HALF) + eps)
            w1 = tl.load(w_ptr + d, mask=d < HALF, other=0.0)
            w2 = tl.load(w_ptr + HALF + d, mask=d < HALF, other=0.0)
            x1 = ((x1 * rstd[:, None]).to(dtype) * w1).to(tl.float32)
            x2 = ((x2 * rstd[:, None]).to(dtype) * w2).to(tl.float32)
        y1 = (x1 * cos - x2 * sin).to(dtype)
        y2 = (x2 * cos + x1 * sin).to(dtype)
        tl.store(p1, y1, mask=mask)
        tl.store(p1 + HALF, y2, mask=mask)
        return y1, y2

    @triton.jit
    def _qk_norm_rope_store_kernel(q_ptr, k_ptr, v_ptr, pos_ptr, cos_sin_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
                                   qw_ptr, kw_ptr, stride_qt, stride_qh, stride_kt, stride_kh, stride_vt,
                                   stride_vh, stride_cs, num_heads, num_kv_heads, eps, inv_kv_scale,
                                   HALF: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_H: tl.constexpr,
                                   BLOCK_KVH: tl.constexpr, HAS_NORM: tl.constexpr):
        t = tl.program_id(0).to(tl.int64)
        pos = tl.load(pos_ptr + t)
        d = tl.arange(0, BLOCK_HALF)[None, :]
        cos = tl.load(cos_sin_ptr + pos * stride_cs + d, mask=d < HALF, other=0.0)
        sin = tl.load(cos_sin_ptr + pos * stride_cs + HALF + d, mask=d < HALF, other=0.0)
        _rope_heads(q_ptr + t * stride_qt, stride_qh, num_heads, cos, sin, qw_ptr, eps,
                    HALF, BLOCK_H, BLOCK_HALF, HAS_NORM)
        k1, k2 = _rope_heads(k_ptr + t * stride_kt, stride_kh, num_kv_heads, cos, sin, kw_ptr, eps,
                             HALF, BLOCK_KVH, BLOCK_HALF, HAS_NORM)
        # The cache is [num_blocks, block_size, kv_heads, head_dim]: a slot is kv_heads*head_dim contiguous.
        slot = tl.load(slot_ptr + t)
        h = tl.arange(0, BLOCK_KVH)[:, None]
        mask = (h < num_kv_heads) & (d < HALF)
        c = slot * num_kv_heads * 2 * HALF + h * 2 * HALF + d
        # Scaled in fp32, then cast to the cache's dtype (exact for a bf16 cache, whose scale is 1).
        kv_ty = k_cache_ptr.dtype.element_ty
        tl.store(k_cache_ptr + c, (k1.to(tl.float32) * inv_kv_scale).to(kv_ty), mask=mask)
        tl.store(k_cache_ptr + c + HALF, (k2.to(tl.float32) * inv_kv_scale).to(kv_ty), mask=mask)
        pv = v_ptr + t * stride_vt + h * stride_vh + d
        v1 = tl.load(pv, mask=mask).to(tl.float32) * inv_kv_scale
        v2 = tl.load(pv + HALF, mask=mask).to(tl.float32) * inv_kv_scale
        tl.store(v_cache_ptr + c, v1.to(kv_ty), mask=mask)
        tl.store(v_cache_ptr + c + HALF, v2.to(kv_ty), mask=mask)


def qk_norm_rope_store_triton(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping,
                              q_norm_w=None, k_norm_w=None, eps=1e-6, kv_scale=1.0):
    T, H, D = q.shape
    KVH = k.shape[1]
    half = D // 2
    assert q.stride(2) == k.stride(2) == v.stride(2) == 1 and k_cache.is_contiguous() and v_cache.is_contiguous()
    has_norm = q_norm_w is not None
    _qk_norm_rope_store_kernel[(T,)](
        q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping,
        q_norm_w if has_norm else cos_sin, k_norm_w if has_norm else cos_sin,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), cos_sin.stride(0),
        H, KVH, eps, 1.0 / kv_scale, HALF=half, BLOCK_HALF=triton.next_power_of_2(half), BLOCK_H=triton.next_power_of_2(H),
        BLOCK_KVH=triton.next_power_of_2(KVH), HAS_NORM=has_norm, num_warps=4)


def qk_norm_rope_store(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping,
                       q_norm_w=None, k_norm_w=None, eps=1e-6, kv_scale=1.0):
    """In place on q [T,H,D] and k [T,KVH,D] (views of the fused qkv output): optional per-head RMSNorm
    (Qwen3), then rotate-half RoPE at `positions` [T]; then k and v [T,KVH,D] are written to the paged cache
    ([num_blocks, block_size, KVH, D]) at flat token slots `slot_mapping` [T] (int64), divided by `kv_scale`
    when the cache is fp8."""
    fn = qk_norm_rope_store_triton if use_triton(q) else qk_norm_rope_store_torch
    fn(q, k, v, positions, cos_sin, k_cache, v_cache, slot_mapping, q_norm_w, k_norm_w, eps, kv_scale)


def feed_ids(ids: torch.Tensor, src: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
    """Input ids with the rows whose token is still on the device (src >= 0: its row of `sampled`, the last
    step's sampled tokens) filled in. Three small kernels, no host sync (async scheduling)."""
    return torch.where(src >= 0, sampled[src.clamp(min=0)], ids)
