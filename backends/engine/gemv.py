"""Skinny GEMM (y = x W^T for x of at most 32 rows) as one Triton kernel that streams the weight once.

At decode batch 1 every linear layer is a weight read; cuBLAS picks split-K plus a reduce kernel for the
4096-wide outputs (o_proj, down), which leaves them at 0.6-0.9 of the bandwidth floor. Here each program owns
BLOCK_N output rows of all M inputs and walks K in BLOCK_K chunks: no split-K, no second kernel, a fixed grid
per shape (CUDA-graph safe). The rows of x are padded to 16 or 32 for tl.dot (tensor cores, and the software
pipeliner keeps several weight tiles in flight); masked rows are never read.

fp8 (e4m3) weights with per-row scales take the same kernel weight-only: each tile is widened to x's dtype in
registers (exact: e4m3 values are all representable in bf16/fp16), the product accumulates in fp32 and the row
scale multiplies the result once. At decode batch 1 that streams half the bytes of bf16, where _scaled_mm
would need x quantized (one more kernel), padded to 16 rows, and runs far below the bandwidth floor at small M.
It is on by default (cuBLAS has no such kernel); PLAN_ENGINE_FP8_GEMV=0 keeps _scaled_mm for every M.

On Hopper and later the same GEMV also comes with its weight tiles fetched by TMA (gemv_tma: one bulk copy a tile
instead of a 16-byte cp.async per thread), which the linear race tries at a few tile shapes (PLAN_ENGINE_TMA_GEMV=0:
not); on an H200 it won most decode linears at 1-16 rows and made those steps ~4% faster.

Both tensor-core GEMVs can also take the RMSNorm between two linears into themselves (fused_norms.py decides where
that wins): the GEMV that adds into the residual stream (o_proj, down) stores the sum and each program's per-row
sum of squares of it (`add_to`), and the GEMV that reads the normed stream (qkv, gate_up) multiplies x by the
norm weight as it streams K and each output row by 1/rms once, from those partial sums (`norm`). The norm
kernel between them, ~2.5 us a call with its launch at decode sizes, is gone.

Backend: env PLAN_ENGINE_GEMV=triton|cublas (default cublas), or `set_backend` (which also sets the env, so
tensor-parallel ranks spawned afterwards agree).
"""
from __future__ import annotations

import functools
import os
from typing import NamedTuple

import torch

from .config import env_switch
from .kernels import triton, use_triton

if triton is not None:
    import triton.language as tl

# Rows the bf16/fp16 GEMVs take (x is padded to 16 or 32 rows for tl.dot; PLAN_ENGINE_GEMV_MAX_ROWS=16 for A/B runs),
# and the fp8 weight-only GEMV (the cost model's FP8_GEMV_MAX_ROWS).
MAX_ROWS = int(os.environ.get("PLAN_ENGINE_GEMV_MAX_ROWS", "32"))
if MAX_ROWS not in (16, 32):
    raise ValueError(f"PLAN_ENGINE_GEMV_MAX_ROWS={MAX_ROWS}: expected 16 or 32")
FP8_MAX_ROWS = 16


PARTS_STRIDE = 32      # floats a program's row sums take in NormParts.sums: the widest BLOCK_M


def _block_m(rows: int) -> int:
    return 16 if rows <= 16 else 32


class NormParts:
    """Per-row partial sums of squares of the residual stream: one row of `sums` per program of the GEMV that
    last added into it (`count` of them), read by the GEMV that normalizes it next."""

    def __init__(self, max_programs: int, device: torch.device):
        self.sums = torch.zeros(max_programs, PARTS_STRIDE, dtype=torch.float32, device=device)
        self.count = 0


class Norm(NamedTuple):
    """x is the residual stream; the GEMV computes RMSNorm(x) @ W^T with this norm weight and eps."""
    weight: torch.Tensor
    eps: float
    parts: NormParts


class AddTo(NamedTuple):
    """The GEMV's output is added into `residual` in place (the new residual stream), with `parts` written."""
    residual: torch.Tensor
    parts: NormParts
BACKENDS = ("cublas", "triton")
_backend = os.environ.get("PLAN_ENGINE_GEMV", "cublas")
if _backend not in BACKENDS:
    raise ValueError(f"PLAN_ENGINE_GEMV={_backend!r}: expected one of {BACKENDS}")
_fp8 = env_switch("PLAN_ENGINE_FP8_GEMV")


def set_backend(name: str) -> None:
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"gemv backend {name!r}: expected one of {BACKENDS}")
    _backend = os.environ["PLAN_ENGINE_GEMV"] = name


def backend() -> str:
    return _backend


def wanted(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the Triton GEMV takes this linear: chosen, CUDA, 2-D x of <= MAX_ROWS rows, bf16/fp16 (an fp32
    tl.dot would be tf32, less exact than cuBLAS)."""
    return (_backend == "triton" and use_triton(x) and x.dim() == 2 and x.shape[0] <= MAX_ROWS
            and x.dtype == weight.dtype and x.dtype in (torch.bfloat16, torch.float16))


def fp8_wanted(x: torch.Tensor) -> bool:
    """Whether an fp8-weight linear takes the weight-only Triton GEMV: on (PLAN_ENGINE_FP8_GEMV, default 1),
    CUDA, 2-D x of <= FP8_MAX_ROWS rows in bf16/fp16."""
    return (_fp8 and use_triton(x) and x.dim() == 2 and x.shape[0] <= FP8_MAX_ROWS
            and x.dtype in (torch.bfloat16, torch.float16))


@functools.cache
def _num_sms(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 132


def config(n: int, k: int, device: torch.device, weight_bytes: int = 2) -> dict:
    """Tile sizes by shape only: the widest BLOCK_N (fewer re-reads of x) that still gives every SM at least
    two programs, so o_proj/down (N=4096) run 256 programs without split-K. A 16 KB weight tile per stage;
    with x's 16 padded rows a stage is 20-32 KB of shared memory, so 3 stages leave room for 2 programs/SM.
    1-byte (fp8) weights keep the tile's shape (a wider BLOCK_K would double x's share of shared memory), so a
    stage carries half the weight bytes: 4 stages (12-24 KB each, still 2 programs/SM) keep more in flight."""
    block_n = 64
    while block_n > 16 and triton.cdiv(n, block_n) < 2 * _num_sms(device):
        block_n //= 2
    block_k = min(8192 // block_n, max(64, triton.next_power_of_2(k)))   # 128 at 64 rows .. 512 at 16
    return dict(BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4, num_stages=3 if weight_bytes > 1 else 4)


if triton is not None:
    _PARTS_STRIDE = tl.constexpr(PARTS_STRIDE)

    @triton.jit
    def _epilogue(acc, out_ptr, parts_in_ptr, parts_out_ptr, P, eps, K, rm, rn, omask, stride_om,
                  NORM: tl.constexpr, ADD_TO: tl.constexpr, BLOCK_P: tl.constexpr, PARTS_STRIDE: tl.constexpr):
        """Stores acc [BLOCK_M, BLOCK_N]: scaled by each row's 1/rms first (NORM: the mean of squares is the
        producer's P partial sums over K), or added into the residual stream at out_ptr (ADD_TO: the sum is
        stored there, in the model dtype as the norm kernel adds, and this program's row sums of its squares
        go to parts_out_ptr)."""
        if NORM:
            rp = tl.arange(0, BLOCK_P)[:, None]
            sums = tl.load(parts_in_ptr + rp * PARTS_STRIDE + rm[None, :], mask=rp < P, other=0.0)
            acc *= (1.0 / tl.sqrt(tl.sum(sums, axis=0) / K + eps))[:, None]
        out_ptrs = out_ptr + rm[:, None] * stride_om + rn[None, :]
        y = acc.to(out_ptr.dtype.element_ty)
        if ADD_TO:
            y = y + tl.load(out_ptrs, mask=omask, other=0.0)
            yf = tl.where(omask, y.to(tl.float32), 0.0)
            tl.store(parts_out_ptr + tl.program_id(0) * PARTS_STRIDE + rm, tl.sum(yf * yf, axis=1))
        tl.store(out_ptrs, y, mask=omask)

    @triton.jit
    def _gemv_kernel(x_ptr, w_ptr, s_ptr, out_ptr, g_ptr, parts_in_ptr, parts_out_ptr, P, eps,
                     M, N, K, stride_xm, stride_wn, stride_om,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
                     HAS_SCALE: tl.constexpr, NORM: tl.constexpr, ADD_TO: tl.constexpr, BLOCK_P: tl.constexpr):
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rm = tl.arange(0, BLOCK_M)
        rk = tl.arange(0, BLOCK_K)
        # Rows past N re-read row N-1 (stores are masked): weight loads need no N mask, so they stay wide.
        rows = tl.minimum(rn, N - 1).to(tl.int64)
        w_ptrs = w_ptr + rows[:, None] * stride_wn + rk[None, :]
        x_ptrs = x_ptr + rm[:, None] * stride_xm + rk[None, :]
        mmask = rm[:, None] < M
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            if EVEN_K:
                w = tl.load(w_ptrs)
                x = tl.load(x_ptrs, mask=mmask, other=0.0)
            else:
                kmask = rk[None, :] < K - k0
                w = tl.load(w_ptrs, mask=kmask, other=0.0)
                x = tl.load(x_ptrs, mask=mmask & kmask, other=0.0)
            if NORM:
                x = x * tl.load(g_ptr + k0 + rk, mask=rk < K - k0, other=0.0)[None, :]
            # fp8 weights widen to x's dtype here, in registers (a no-op for bf16 weights)
            acc += tl.dot(x, tl.trans(w.to(x_ptr.dtype.element_ty)))
            w_ptrs += BLOCK_K
            x_ptrs += BLOCK_K
        if HAS_SCALE:
            acc *= tl.load(s_ptr + rows)[None, :]
        _epilogue(acc, out_ptr, parts_in_ptr, parts_out_ptr, P, eps, K, rm, rn, mmask & (rn[None, :] < N),
                  stride_om, NORM, ADD_TO, BLOCK_P, _PARTS_STRIDE)


if triton is not None:
    @triton.jit
    def _gemv_row_kernel(x_ptr, w_ptr, s_ptr, out_ptr, N, K, stride_wn, BLOCK_N: tl.constexpr,
                         BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr, HAS_SCALE: tl.constexpr):
        # One input row: a multiply-add on CUDA cores into a [BLOCK_N, BLOCK_K] accumulator, reduced once at
        # the end. No tensor-core operand layout, so fp8 tiles need no shuffle through shared memory.
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        rows = tl.minimum(rn, N - 1).to(tl.int64)
        w_ptrs = w_ptr + rows[:, None] * stride_wn + rk[None, :]
        acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            if EVEN_K:
                w = tl.load(w_ptrs)
                x = tl.load(x_ptr + k0 + rk)
            else:
                kmask = rk < K - k0
                w = tl.load(w_ptrs, mask=kmask[None, :], other=0.0)
                x = tl.load(x_ptr + k0 + rk, mask=kmask, other=0.0)
            acc += w.to(tl.float32) * x.to(tl.float32)[None, :]
            w_ptrs += BLOCK_K
        y = tl.sum(acc, axis=1)
        if HAS_SCALE:
            y *= tl.load(s_ptr + rows)
        tl.store(out_ptr + rn, y.to(out_ptr.dtype.element_ty), mask=rn < N)


# Best total over the four Llama-3.1-8B shapes in benchmarks/results/gemv_sweep_row_H200.json.
ROW_CONFIG = dict(BLOCK_N=8, BLOCK_K=1024, num_warps=4, num_stages=2)


def gemv_row(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None = None,
             cfg: dict | None = None) -> torch.Tensor:
    """x [1, K] @ weight[N, K]^T for fp8 (or bf16) weights, without tensor cores (see _gemv_row_kernel)."""
    K = x.shape[1]
    N = weight.shape[0]
    assert x.shape[0] == 1 and weight.shape[1] == K and weight.stride(1) == 1 and x.stride(1) == 1
    assert scale is None or (scale.shape == (N,) and scale.stride(0) == 1)
    out = torch.empty(1, N, dtype=x.dtype, device=x.device)
    cfg = cfg or ROW_CONFIG
    _gemv_row_kernel[(triton.cdiv(N, cfg["BLOCK_N"]),)](
        x, weight, scale, out, N, K, weight.stride(0), EVEN_K=K % cfg["BLOCK_K"] == 0,
        HAS_SCALE=scale is not None, **cfg)
    return out


def _fusion_args(x: torch.Tensor, out: torch.Tensor, grid: int, norm: Norm | None, add_to: AddTo | None) -> dict:
    """The kernels' fusion arguments (unused pointers point at x); records the partial sums add_to writes."""
    args = dict(g_ptr=x, parts_in_ptr=x, parts_out_ptr=x, P=1, eps=0.0, NORM=norm is not None,
                ADD_TO=add_to is not None, BLOCK_P=1, BLOCK_M=_block_m(x.shape[0]))
    if norm is not None:
        assert norm.parts.count > 0 and norm.weight.shape == (x.shape[1],)
        args.update(g_ptr=norm.weight, parts_in_ptr=norm.parts.sums, P=norm.parts.count, eps=norm.eps,
                    BLOCK_P=triton.next_power_of_2(norm.parts.count))
    if add_to is not None:
        assert add_to.residual is out and grid <= add_to.parts.sums.shape[0]
        args.update(parts_out_ptr=add_to.parts.sums)
        add_to.parts.count = grid
    return args


def _output(x: torch.Tensor, n: int, add_to: AddTo | None) -> torch.Tensor:
    if add_to is None:
        return torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)
    assert add_to.residual.shape == (x.shape[0], n) and add_to.residual.stride(1) == 1
    return add_to.residual


def gemv(x: torch.Tensor, weight: torch.Tensor, cfg: dict | None = None,
         scale: torch.Tensor | None = None, norm: Norm | None = None, add_to: AddTo | None = None) -> torch.Tensor:
    """x [M <= MAX_ROWS, K] @ weight[N, K]^T -> [M, N] in x's dtype, fp32 accumulation. `cfg` overrides `config`.
    `scale` (fp32 [N]): per-row weight scales, for fp8 weights (out = x @ (weight * scale[:, None])^T).
    `norm`: RMSNorm(x) @ weight^T instead; `add_to`: the product is added into add_to.residual, which is returned."""
    M, K = x.shape
    N = weight.shape[0]
    if M == 1 and weight.element_size() == 1 and cfg is None and x.stride(1) == 1 and not (norm or add_to):
        return gemv_row(x, weight, scale)
    assert M <= MAX_ROWS and weight.shape[1] == K and weight.stride(1) == 1
    x = x if x.stride(1) == 1 else x.contiguous()
    out = _output(x, N, add_to)
    assert scale is None or (scale.shape == (N,) and scale.stride(0) == 1)
    cfg = cfg or config(N, K, x.device, weight.element_size())
    grid = triton.cdiv(N, cfg["BLOCK_N"])
    _gemv_kernel[(grid,)](
        x, weight, scale, out, M=M, N=N, K=K, stride_xm=x.stride(0), stride_wn=weight.stride(0),
        stride_om=out.stride(0), EVEN_K=K % cfg["BLOCK_K"] == 0, HAS_SCALE=scale is not None,
        **_fusion_args(x, out, grid, norm, add_to), **cfg)
    return out


if triton is not None:
    @triton.jit
    def _gemv_tma_kernel(x_ptr, w_desc, out_ptr, g_ptr, parts_in_ptr, parts_out_ptr, P, eps, M, N, K, stride_xm,
                         stride_om, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         NORM: tl.constexpr, ADD_TO: tl.constexpr, BLOCK_P: tl.constexpr):
        # The weight tiles arrive by TMA (one bulk copy a tile, issued by one thread) instead of cp.async.
        pid = tl.program_id(0)
        n0 = pid * BLOCK_N
        rm = tl.arange(0, BLOCK_M)
        rk = tl.arange(0, BLOCK_K)
        x_ptrs = x_ptr + rm[:, None] * stride_xm + rk[None, :]
        mmask = rm[:, None] < M
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            w = w_desc.load([n0, k0])
            x = tl.load(x_ptrs, mask=mmask, other=0.0)
            if NORM:
                x = x * tl.load(g_ptr + k0 + rk)[None, :]
            acc += tl.dot(x, tl.trans(w))
            x_ptrs += BLOCK_K
        rn = n0 + tl.arange(0, BLOCK_N)
        _epilogue(acc, out_ptr, parts_in_ptr, parts_out_ptr, P, eps, K, rm, rn, mmask & (rn[None, :] < N),
                  stride_om, NORM, ADD_TO, BLOCK_P, _PARTS_STRIDE)


# Tiles the linear race tries for gemv_tma (quant.Unquantized.candidates), by backend name: each was the fastest
# for one of Llama-3.1-8B's decode linears at 1-16 rows on an H200 among 36 (benchmarks/results/gemv_tma_H200/).
TMA_CONFIGS = {f"triton_tma_{bn}x{bk}s{stages}": dict(BLOCK_N=bn, BLOCK_K=bk, num_stages=stages, num_warps=4)
               for bn, bk, stages in ((64, 256, 4), (32, 256, 6), (64, 128, 4), (128, 128, 3))}
_tma = env_switch("PLAN_ENGINE_TMA_GEMV")


@functools.cache
def _has_tma(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device) >= (9, 0)


def tma_wanted(x: torch.Tensor) -> bool:
    """Whether the race tries gemv_tma: on (PLAN_ENGINE_TMA_GEMV, default 1), a GPU with TMA (Hopper on), a
    2-D bf16/fp16 x of <= MAX_ROWS rows."""
    return (_tma and use_triton(x) and _has_tma(x.device) and x.dim() == 2 and x.shape[0] <= MAX_ROWS
            and x.dtype in (torch.bfloat16, torch.float16))


def gemv_tma(x: torch.Tensor, weight: torch.Tensor, cfg: dict, norm: Norm | None = None,
             add_to: AddTo | None = None) -> torch.Tensor:
    """gemv() with the weight read through a TMA descriptor (Hopper and later); K a multiple of BLOCK_K."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    M, K = x.shape
    N = weight.shape[0]
    assert M <= MAX_ROWS and K % cfg["BLOCK_K"] == 0 and x.stride(1) == 1
    out = _output(x, N, add_to)
    desc = TensorDescriptor.from_tensor(weight, [cfg["BLOCK_N"], cfg["BLOCK_K"]])
    grid = triton.cdiv(N, cfg["BLOCK_N"])
    _gemv_tma_kernel[(grid,)](x, desc, out, M=M, N=N, K=K, stride_xm=x.stride(0), stride_om=out.stride(0),
                              **_fusion_args(x, out, grid, norm, add_to), **cfg)
    return out
