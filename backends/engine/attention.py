"""Attention over the paged KV cache.

Cache layout (per layer): k_cache, v_cache = [num_blocks, block_size, num_kv_heads, head_dim]; a token's
K/V live at flat slot `block_table[pos // block_size] * block_size + pos % block_size`.

Public kernels (the profiler team times these directly):
  prefill_attention(q [Lq,H,D], k [Lk,KVH,D], v, scale) -> [Lq,H,D]
      causal, queries are the last Lq of the Lk positions (bottom-right aligned). torch SDPA without its
      cuDNN backend (which builds a plan per new sequence length: 0.4-0.9 s stalls mid-serving on an H200).
  prefill_attention_varlen(q [Tq,H,D], k [Tk,KVH,D], v, cu_q, cu_k, max_q, max_k, scale) -> [Tq,H,D]
      every prefill sequence of a step in one flash-attention call (CUDA): cu_q / cu_k are the int32 prefix
      sums of the query and key lengths, GQA native, bottom-right causal.
  decode_attention(q [B,H,D], k_cache, v_cache, block_tables [B,W] int32, context_lens [B] int32, scale,
                   num_splits) -> [B,H,D]
      one query per sequence over its first context_lens[b] cached tokens. On CUDA a Triton split-K
      ("flash-decoding") kernel: one program per (sequence, kv head, split) reads each K/V tile once for
      all the query heads of its group, so it is bound by KV bandwidth; partial results are merged by a
      second small kernel. Pure torch elsewhere. CUDA-graph safe (no host sync, shapes fixed by B and W).
  paged_attention(q, k, v, k_cache, v_cache, meta, scale): one engine step's mix of prefill chunks and
      decodes (tokens of prefill sequences first, then one token per decoding sequence).

An fp8 (e4m3) cache holds K/V divided by a per-tensor `kv_scale`; readers multiply it back in fp32 and attend
in the query's dtype.
"""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

from .config import env_switch
from .kernels import copy_into, triton, use_triton

if triton is not None:
    import triton.language as tl


SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor                      # [T] int64: cache slot each new token's K/V goes to
    num_prefill_tokens: int = 0
    # host ints per prefill sequence: (first row in the batch, query length, context length incl. the query)
    prefill_seqs: list[tuple[int, int, int]] = field(default_factory=list)
    # device int32 block table per prefill sequence with a cached prefix (None where the prefix is empty)
    prefill_block_tables: list[torch.Tensor | None] = field(default_factory=list)
    decode_block_tables: torch.Tensor | None = None   # [B, W] int32
    decode_context_lens: torch.Tensor | None = None   # [B] int64, including the new token
    decode_num_splits: int = 1
    # Varlen prefill (CUDA): int32 prefix sums of query / key lengths, their maxima, and the cache slots of every
    # prefill sequence's context (None when no sequence has a cached prefix: the step's own K/V are all there is).
    prefill_cu_q: torch.Tensor | None = None
    prefill_cu_k: torch.Tensor | None = None
    prefill_max_q: int = 0
    prefill_max_k: int = 0
    prefill_kv_slots: torch.Tensor | None = None
    # Decodes counted on the device (whole-forward graphs of mixed steps): their rows follow every prefill row
    # the prefill attention wrote, and their attention overwrites those rows (decode_attention_rows).
    decode_rows: DecodeRows | None = None


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    Lq, H, _ = q.shape
    Lk, KVH, _ = k.shape
    if KVH != H:  # GQA: SDPA's flash path wants equal head counts; the copy is small next to the matmuls
        k, v = k.repeat_interleave(H // KVH, dim=1), v.repeat_interleave(H // KVH, dim=1)
    q, k, v = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))
    with sdpa_kernel(SDPA_BACKENDS):
        if Lq == Lk:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(Lq, Lk), scale=scale)
    return out.squeeze(0).transpose(0, 1)


def varlen_supported(q: torch.Tensor) -> bool:
    """torch's flash-attention kernel: CUDA, 16-bit, head_dim a multiple of 8 up to 256 (sm80+)."""
    return (q.is_cuda and q.dtype in (torch.bfloat16, torch.float16) and q.shape[-1] % 8 == 0 and q.shape[-1] <= 256
            and torch.cuda.get_device_capability(q.device)[0] >= 8)


def prefill_attention_varlen(q, k, v, cu_q, cu_k, max_q: int, max_k: int, scale: float) -> torch.Tensor:
    return torch.ops.aten._flash_attention_forward(q, k, v, cu_q, cu_k, max_q, max_k, 0.0, True, False,
                                                   scale=scale)[0]


def dequantize_kv(x: torch.Tensor, kv_scale: float, dtype: torch.dtype) -> torch.Tensor:
    return x if x.dtype == dtype else (x.float() * kv_scale).to(dtype)


def gather_kv(k_cache, v_cache, block_table: torch.Tensor, context_len: int, kv_scale: float = 1.0,
              dtype: torch.dtype | None = None):
    """Contiguous [context_len, KVH, D] copies of one sequence's cached K and V (in `dtype`, default the cache's)."""
    dtype = dtype or k_cache.dtype
    k = k_cache[block_table].flatten(0, 1)[:context_len]
    v = v_cache[block_table].flatten(0, 1)[:context_len]
    return dequantize_kv(k, kv_scale, dtype), dequantize_kv(v, kv_scale, dtype)


@functools.cache
def _num_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


# Cap on the splits per context. 16 splits of a 1k context leave each program one 64-token tile
# (latency-bound); fewer give each program several tiles to stream, but fewer programs (env to tune).
MAX_DECODE_SPLITS = int(os.environ.get("PLAN_ENGINE_DECODE_MAX_SPLITS", "16"))
DECODE_PROGRAMS_PER_SM = 4      # what one wave of the kernel's programs holds (H200: 65 x 8 programs run as fast as 64)
SPLIT_PAST_WAVE = env_switch("PLAN_ENGINE_DECODE_SPLIT_PAST_WAVE")     # 0: one split past one wave (before 2026-12-03)


def decode_num_splits(batch_size: int, num_kv_heads: int, device: torch.device) -> int:
    """Splits of each context (static per batch size: the graphs capture it). Within one wave of programs, as many
    as keep every SM busy. Past it, two where they leave fewer whole-context waves: one split each of 72-96
    sequences runs a second wave that is mostly empty (H200, 1k / 4k context: 72 x 8 programs took 96 / 386 us
    with one split, 90 / 325 with two; 112 took 118 / 467 with one, 128 / 464 with two; engine_probes --only splits)."""
    if device.type != "cuda":
        return 1
    slots = DECODE_PROGRAMS_PER_SM * _num_sms(device)
    programs = batch_size * num_kv_heads
    if programs > slots:
        two_fill_better = math.ceil(2 * programs / slots) < 2 * math.ceil(programs / slots)
        return 2 if two_fill_better and SPLIT_PAST_WAVE and MAX_DECODE_SPLITS >= 2 else 1
    n = max(1, min(MAX_DECODE_SPLITS, slots // programs))
    return 1 << (n.bit_length() - 1)  # a power of two: the merge kernel spans the splits with tl.arange


def decode_attention_torch(q, k_cache, v_cache, block_tables, context_lens, scale, kv_scale=1.0):
    B, H, D = q.shape
    KVH = k_cache.shape[2]
    k = dequantize_kv(k_cache[block_tables.long()].flatten(1, 2), kv_scale, torch.float32)   # [B, L, KVH, D]
    v = dequantize_kv(v_cache[block_tables.long()].flatten(1, 2), kv_scale, torch.float32)
    L = k.shape[1]
    qg = q.view(B, KVH, H // KVH, D).float()
    scores = torch.einsum("bhgd,blhd->bhgl", qg, k.float()) * scale
    valid = torch.arange(L, device=q.device)[None, :] < context_lens[:, None]
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    out = torch.einsum("bhgl,blhd->bhgd", scores.softmax(-1), v.float())
    return out.reshape(B, H, D).to(q.dtype)


if triton is not None:
    @triton.jit
    def _attend_tile(q, k_ptr, v_ptr, bt_ptr, b, kvh, t0, end, m, l, acc, d, dmask, scale_log2, kv_scale,
                     stride_kb, stride_kt, stride_kh, stride_bt, TILE: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                     KV_FP8: tl.constexpr):
        """Online softmax over the cached tokens [t0, min(t0 + TILE, end)) of one sequence and kv head."""
        toks = t0 + tl.arange(0, TILE)
        tmask = toks < end
        blk = tl.load(bt_ptr + b * stride_bt + toks // BLOCK_SIZE, mask=tmask, other=0).to(tl.int64)
        row = blk * stride_kb + (toks % BLOCK_SIZE) * stride_kt + kvh * stride_kh
        kvmask = tmask[:, None] & dmask[None, :]
        k = tl.load(k_ptr + row[:, None] + d[None, :], mask=kvmask, other=0.0)
        if KV_FP8:
            k = (k.to(tl.float32) * kv_scale).to(q.dtype)
        s = tl.dot(q, tl.trans(k)) * scale_log2                 # [BLOCK_G, TILE], log2 domain
        s = tl.where(tmask[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m - m_new)
        l = l * alpha + tl.sum(p, axis=1)
        v = tl.load(v_ptr + row[:, None] + d[None, :], mask=kvmask, other=0.0)
        if KV_FP8:
            v = (v.to(tl.float32) * kv_scale).to(q.dtype)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        return m_new, l, acc

    # The block-table row stride is the graph buffers' fixed width under CUDA graphs but the step's widest
    # table in eager (mixed) steps: specialised on its value (==1, %16) each new case compiled a kernel variant
    # in the middle of serving (~0.3 s stalls on an H200, one per split count).
    @triton.jit(do_not_specialize=["stride_bt"])
    def _decode_kernel(q_ptr, k_ptr, v_ptr, bt_ptr, ctx_ptr, out_ptr, part_o_ptr, part_ml_ptr, rows_ptr, splits_ptr,
                       scale_log2, kv_scale,
                       stride_qb, stride_qh, stride_kb, stride_kt, stride_kh, stride_bt, stride_ob, stride_oh,
                       num_heads, num_kv_heads, GROUP: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr,
                       BLOCK_D: tl.constexpr, BLOCK_SIZE: tl.constexpr, TILE: tl.constexpr, TAIL: tl.constexpr,
                       NUM_SPLITS: tl.constexpr, KV_FP8: tl.constexpr, ROWS_ON_DEVICE: tl.constexpr):
        g = tl.arange(0, BLOCK_G)
        if ROWS_ON_DEVICE:
            # One flat grid sized for the most decodes a graph may carry: how many there are, the first one's row
            # and the split count for that many are read from the device (decode_attention_rows).
            nd = tl.load(rows_ptr)
            row0 = tl.load(rows_ptr + 1)
            num_splits = tl.load(splits_ptr + nd)
            pid = tl.program_id(0)
            b = pid // (num_kv_heads * num_splits)
            kvh = pid // num_splits % num_kv_heads
            split = pid % num_splits
            valid = (b + tl.zeros([BLOCK_G], tl.int32)) < nd      # (vectors: masks by a scalar vary by backend)
            ctx = tl.where(b < nd, tl.load(ctx_ptr + tl.where(b < nd, b, 0)), 0)
        else:
            b = tl.program_id(0)
            kvh = tl.program_id(1)
            split = tl.program_id(2)
            num_splits = NUM_SPLITS
            row0 = 0
            valid = g >= 0
            ctx = tl.load(ctx_ptr + b)
        # int32: the engine's int64 lengths made every token index int64 (166 registers a program, 3 an SM)
        ctx = ctx.to(tl.int32)
        # Each split takes a whole number of tiles of this sequence's own context.
        tiles_per_split = tl.cdiv(tl.cdiv(ctx, TILE), num_splits)
        start = split * tiles_per_split * TILE
        end = tl.minimum(start + tiles_per_split * TILE, ctx)

        d = tl.arange(0, BLOCK_D)
        heads = kvh * GROUP + g
        gmask = g < GROUP
        dmask = d < HEAD_DIM
        q = tl.load(q_ptr + (row0 + b) * stride_qb + heads[:, None] * stride_qh + d[None, :],
                    mask=(gmask & valid)[:, None] & dmask[None, :], other=0.0)
        m = tl.full([BLOCK_G], float("-inf"), tl.float32)
        l = tl.zeros([BLOCK_G], tl.float32)
        acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
        # Whole tiles, then the rest in TAIL-token tiles: a nearly empty last tile cost a whole one's time.
        full_end = start + (end - start) // TILE * TILE
        for t0 in range(start, full_end, TILE):
            m, l, acc = _attend_tile(q, k_ptr, v_ptr, bt_ptr, b, kvh, t0, end, m, l, acc, d, dmask, scale_log2,
                                     kv_scale, stride_kb, stride_kt, stride_kh, stride_bt, TILE, BLOCK_SIZE, KV_FP8)
        for t0 in range(full_end, end, TAIL):
            m, l, acc = _attend_tile(q, k_ptr, v_ptr, bt_ptr, b, kvh, t0, end, m, l, acc, d, dmask, scale_log2,
                                     kv_scale, stride_kb, stride_kt, stride_kh, stride_bt, TAIL, BLOCK_SIZE, KV_FP8)
        omask = (gmask & valid)[:, None] & dmask[None, :]
        if num_splits == 1:
            out = acc / l[:, None]
            tl.store(out_ptr + (row0 + b) * stride_ob + heads[:, None] * stride_oh + d[None, :],
                     out.to(out_ptr.dtype.element_ty), mask=omask)
        else:
            # Empty splits (short contexts) leave m = -inf, l = 0: the merge gives them weight 0.
            out = acc / tl.maximum(l, 1e-30)[:, None]
            base = (b * num_heads + heads) * num_splits + split
            tl.store(part_o_ptr + base[:, None] * HEAD_DIM + d[None, :], out, mask=omask)
            tl.store(part_ml_ptr + base * 2, m, mask=gmask & valid)
            tl.store(part_ml_ptr + base * 2 + 1, l, mask=gmask & valid)

    @triton.jit
    def _decode_merge_kernel(part_o_ptr, part_ml_ptr, out_ptr, rows_ptr, splits_ptr, stride_ob, stride_oh, num_heads,
                             HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, NUM_SPLITS: tl.constexpr,
                             ROWS_ON_DEVICE: tl.constexpr):
        b = tl.program_id(0)
        h = tl.program_id(1)
        s = tl.arange(0, NUM_SPLITS)      # with rows on the device: the most splits, of which num_splits are used
        d = tl.arange(0, BLOCK_D)
        if ROWS_ON_DEVICE:
            nd = tl.load(rows_ptr)
            row0 = tl.load(rows_ptr + 1)
            num_splits = tl.load(splits_ptr + nd)
            # nothing to merge past the decodes, or when one split wrote its rows itself
            smask = (s < num_splits) & ((b + 0 * s) < nd) & ((num_splits + 0 * s) > 1)
            valid = ((b + 0 * d) < nd) & ((num_splits + 0 * d) > 1)
        else:
            num_splits = NUM_SPLITS
            row0 = 0
            smask = s >= 0
            valid = d >= 0
        base = (b * num_heads + h) * num_splits + s
        m = tl.load(part_ml_ptr + base * 2, mask=smask, other=float("-inf"))
        l = tl.load(part_ml_ptr + base * 2 + 1, mask=smask, other=0.0)
        w = tl.where(l > 0, tl.exp2(m - tl.max(m, axis=0)) * l, 0.0)
        o = tl.load(part_o_ptr + base[:, None] * HEAD_DIM + d[None, :], mask=smask[:, None] & (d[None, :] < HEAD_DIM),
                    other=0.0)
        out = tl.sum(o * w[:, None], axis=0) / tl.sum(w, axis=0)
        tl.store(out_ptr + (row0 + b) * stride_ob + h * stride_oh + d, out.to(out_ptr.dtype.element_ty),
                 mask=(d < HEAD_DIM) & valid)


# Tokens per tile past the last whole one (a power of two, at least 16 for tl.dot; `tail` of the probes).
DECODE_TAIL = int(os.environ.get("PLAN_ENGINE_DECODE_TAIL", "16"))


# The decode kernel's Triton launch options.
DECODE_LAUNCH = {"num_warps": 4}


def decode_tile(head_dim: int) -> int:
    """Context tokens per iteration of the decode kernel. An H200 sweep (benchmarks/engine_probes.py) put
    head size 64 at 0.91-0.97 of copy bandwidth with 128-token tiles and 0.78-0.96 with 64; head size 128 is
    best at 64 (0.83-1.06)."""
    d = triton.next_power_of_2(head_dim)
    return 128 if d <= 64 else 64 if d <= 128 else 32


def decode_attention_triton(q, k_cache, v_cache, block_tables, context_lens, scale, num_splits=1, out=None,
                            kv_scale=1.0, tile: int | None = None, tail: int | None = None, launch: dict | None = None):
    B, H, D = q.shape
    tile = tile or decode_tile(D)
    tail = min(tail or DECODE_TAIL, tile)
    _, block_size, KVH, _ = k_cache.shape
    # Any layout with a contiguous head dimension (the probes time a head-major one); V shares K's strides
    assert q.stride(2) == 1 and k_cache.stride(3) == 1 and k_cache.stride() == v_cache.stride()
    assert num_splits & (num_splits - 1) == 0, "num_splits must be a power of two"
    group = H // KVH
    out = torch.empty(B, H, D, dtype=q.dtype, device=q.device) if out is None else out
    if num_splits > 1:
        part_o = torch.empty(B, H, num_splits, D, dtype=torch.float32, device=q.device)
        part_ml = torch.empty(B, H, num_splits, 2, dtype=torch.float32, device=q.device)
    else:
        part_o = part_ml = out
    block_d = triton.next_power_of_2(D)
    # launch (probes only): Triton options over DECODE_LAUNCH. Its default pipeline depth was the fastest, or within
    # 4%, at every batch 1-256 with the default splits on an H200 (benchmarks/engine_probes.py --only stages).
    _decode_kernel[(B, KVH, num_splits)](
        q, k_cache, v_cache, block_tables, context_lens, out, part_o, part_ml, context_lens, context_lens,
        scale * 1.4426950408889634, kv_scale,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        out.stride(0), out.stride(1), H, KVH, GROUP=group, BLOCK_G=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=D, BLOCK_D=block_d, BLOCK_SIZE=block_size, TILE=tile, TAIL=tail, NUM_SPLITS=num_splits,
        KV_FP8=k_cache.dtype != q.dtype, ROWS_ON_DEVICE=False, **{**DECODE_LAUNCH, **(launch or {})})
    if num_splits > 1:
        _decode_merge_kernel[(B, H)](part_o, part_ml, out, context_lens, context_lens, out.stride(0), out.stride(1), H,
                                     HEAD_DIM=D, BLOCK_D=block_d, NUM_SPLITS=num_splits, ROWS_ON_DEVICE=False)
    return out


@dataclass
class DecodeRows:
    """Decodes whose count and first row live on the device, for a graph captured once for any count up to
    `max_decodes` (a whole-forward graph of a mixed step): `rows` = [count, first row] (int64), `splits` the split
    count by decode count (as decode_num_splits picks it), `part_o`/`part_ml` the partials for the most splits."""
    rows: torch.Tensor
    splits: torch.Tensor
    max_splits: int
    num_programs: int
    part_o: torch.Tensor
    part_ml: torch.Tensor

    @classmethod
    def allocate(cls, max_decodes: int, num_heads: int, num_kv_heads: int, head_dim: int, device: torch.device,
                 rows: torch.Tensor):
        by_count = [1] + [decode_num_splits(n, num_kv_heads, device) for n in range(1, max_decodes + 1)]
        max_splits = max(by_count)
        merged = max(n for n, s in enumerate(by_count) if s > 1 or n == 1)   # the most decodes that are split
        return cls(rows=rows, splits=torch.tensor(by_count, dtype=torch.int32, device=device), max_splits=max_splits,
                   num_programs=max(n * num_kv_heads * s for n, s in enumerate(by_count)),
                   part_o=torch.empty(merged, num_heads, max_splits, head_dim, dtype=torch.float32, device=device),
                   part_ml=torch.empty(merged, num_heads, max_splits, 2, dtype=torch.float32, device=device))


def decode_attention_rows(q, k_cache, v_cache, block_tables, context_lens, scale, dec: DecodeRows, out,
                          kv_scale=1.0):
    """decode_attention for the rows dec.rows names: q and out are every row of the step ([T, H, D]); the decode
    kernel's flat grid and the merge's are sized for the most decodes, and programs past the count do nothing."""
    _, H, D = q.shape
    _, block_size, KVH, _ = k_cache.shape
    group = H // KVH
    block_d = triton.next_power_of_2(D)
    _decode_kernel[(dec.num_programs,)](
        q, k_cache, v_cache, block_tables, context_lens, out, dec.part_o, dec.part_ml, dec.rows, dec.splits,
        scale * 1.4426950408889634, kv_scale,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        out.stride(0), out.stride(1), H, KVH, GROUP=group, BLOCK_G=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=D, BLOCK_D=block_d, BLOCK_SIZE=block_size, TILE=decode_tile(D), TAIL=min(DECODE_TAIL, decode_tile(D)),
        NUM_SPLITS=dec.max_splits,
        KV_FP8=k_cache.dtype != q.dtype, ROWS_ON_DEVICE=True, **DECODE_LAUNCH)
    if dec.max_splits > 1:
        _decode_merge_kernel[(dec.part_o.shape[0], H)](
            dec.part_o, dec.part_ml, out, dec.rows, dec.splits, out.stride(0), out.stride(1), H, HEAD_DIM=D,
            BLOCK_D=block_d, NUM_SPLITS=dec.max_splits, ROWS_ON_DEVICE=True)
    return out


def decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale, num_splits=1, kv_scale=1.0, out=None):
    """Into `out` when given (the Triton kernel writes it directly)."""
    if use_triton(q):
        return decode_attention_triton(q, k_cache, v_cache, block_tables, context_lens, scale, num_splits,
                                       out=out, kv_scale=kv_scale)
    o = decode_attention_torch(q, k_cache, v_cache, block_tables, context_lens, scale, kv_scale)
    return o if out is None else out.copy_(o)


def paged_attention(q, k, v, k_cache, v_cache, meta: AttentionMetadata, scale: float,
                    kv_scale: float = 1.0, out: torch.Tensor | None = None) -> torch.Tensor:
    """q [T,H,D], k/v [T,KVH,D] of this step's tokens, already RoPE'd and stored in the cache; the result goes
    to `out` when given."""
    n_pre = meta.num_prefill_tokens
    if n_pre == 0:
        return decode_attention(q, k_cache, v_cache, meta.decode_block_tables, meta.decode_context_lens,
                                scale, meta.decode_num_splits, kv_scale, out)
    out = torch.empty_like(q) if out is None else out
    if meta.prefill_cu_q is not None:
        if meta.prefill_kv_slots is None:
            ks, vs = k[:n_pre], v[:n_pre]
        else:
            slots = meta.prefill_kv_slots
            ks = dequantize_kv(k_cache.flatten(0, 1)[slots], kv_scale, q.dtype)
            vs = dequantize_kv(v_cache.flatten(0, 1)[slots], kv_scale, q.dtype)
        copy_into(out[:n_pre], prefill_attention_varlen(q[:n_pre], ks, vs, meta.prefill_cu_q, meta.prefill_cu_k,
                                                        meta.prefill_max_q, meta.prefill_max_k, scale))
    else:
        for (start, q_len, ctx_len), table in zip(meta.prefill_seqs, meta.prefill_block_tables):
            if table is None:  # no cached prefix: this chunk's own K/V are all there is
                ks, vs = k[start:start + q_len], v[start:start + q_len]
            else:
                ks, vs = gather_kv(k_cache, v_cache, table, ctx_len, kv_scale, q.dtype)
            out[start:start + q_len] = prefill_attention(q[start:start + q_len], ks, vs, scale)
    if meta.decode_rows is not None:
        decode_attention_rows(q, k_cache, v_cache, meta.decode_block_tables, meta.decode_context_lens, scale,
                              meta.decode_rows, out, kv_scale)
    elif q.shape[0] > n_pre:
        decode_attention(q[n_pre:], k_cache, v_cache, meta.decode_block_tables, meta.decode_context_lens, scale,
                         meta.decode_num_splits, kv_scale, out[n_pre:])
    return out
