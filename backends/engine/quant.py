"""How a Linear stores its weight and multiplies by it: as loaded (bf16/fp16/fp32), fp8 or int8.

Quantization is per output channel (one scale per weight row), so each checkpoint shard or random block can be
quantized as it arrives: the full-precision model never exists on the device. The tensors live on the Linear
(`weight`, `weight_scale`); a scheme holds only the kernel choices its `tune` timed on the device.

As loaded: F.linear with PyTorch's default BLAS library (or at <= 32 rows the Triton GEMV of gemv.py, with
PLAN_ENGINE_GEMV=triton). On CUDA, `Unquantized.tune` times cuBLAS, cuBLASLt and (<= 32 rows) the Triton GEMV
(one row: both of its kernels) per weight shape at each decode CUDA-graph batch size, and at exactly those row
counts the winner runs
(PLAN_ENGINE_TUNE_LINEAR=0 turns this off): none of them is fastest at every shape and row count.

fp8 (e4m3): at <= 16 rows on CUDA, weight-only (gemv.py: fp8 tiles widened to bf16 in the kernel, x as is;
PLAN_ENGINE_FP8_GEMV=0 turns it off). Otherwise activations are quantized per token at run time; on CUDA the
GEMM is torch._scaled_mm (row-wise scales, fast accumulation, bf16 out); elsewhere the same arithmetic in fp32 (quantized
operands, fp32 product, both scales), so CPU tests see the rounding the GPU does. int8 is weight-only:
int8 -> activation dtype, matmul, then the
per-row scale on the output (cheaper than scaling the weight; saves memory, not bandwidth, without a kernel).
"""
from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from planner.costmodel import FP8_TUNED_ROWS

from . import gemv, parallel
from .config import env_switch
from .kernels import triton, use_triton

if triton is not None:
    import triton.language as tl

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max   # 448
INT8_MAX = 127.0


def quantize_rows(w: torch.Tensor, qdtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(q [n, k] qdtype, scale [n] fp32) with w ~= q * scale[:, None]."""
    wf = w.float()
    qmax = FP8_MAX if qdtype == FP8 else INT8_MAX
    scale = wf.abs().amax(dim=1).clamp(min=1e-12) / qmax
    q = (wf / scale[:, None]).clamp(-qmax, qmax)
    return (q if qdtype == FP8 else q.round()).to(qdtype), scale


def tune_linear_enabled() -> bool:
    """PLAN_ENGINE_TUNE_LINEAR (default 1): whether the engine times bf16/fp16 linear backends at start-up."""
    return env_switch("PLAN_ENGINE_TUNE_LINEAR")


def _median_s(fn, reps: int = 5, calls: int = 10) -> float:
    """Median over `reps` of the mean device time of `calls` back-to-back calls, replayed from one CUDA graph as
    the engine's graphs run them (after a warm-up). Issued from the host, a call of two launches (quantize, then
    _scaled_mm) timed its host work, not the GPU's: the race then picked the fp8 GEMV for Qwen2.5-14B's layers at
    8 rows, which graph replay runs ~2x slower than _scaled_mm (H200 profile: qkv 35.1 against 17.9 us)."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / calls)
    return sorted(times)[len(times) // 2]


# What a candidate that cannot run here raises: a library missing from this build, a kernel refusing the shape, a
# Triton kernel whose tiles need more shared memory than this GPU has.
REFUSALS = (RuntimeError,) + ((triton.OutOfResources,) if triton is not None else ())


def timed(candidates: dict[str, Callable[[], object]], time_s: Callable = _median_s) -> dict[str, float]:
    """Each candidate call's `time_s`; infinite for a call that raises one of REFUSALS (it can never win)."""
    def timed_s(fn) -> float:
        try:
            return time_s(fn)
        except REFUSALS:
            return float("inf")
    return {name: timed_s(fn) for name, fn in candidates.items()}


def fastest(candidates: dict[str, Callable[[], object]], time_s: Callable = _median_s) -> str:
    """The name of the candidate call `time_s` times fastest; ties go to the one listed first."""
    times = timed(candidates, time_s)
    return min(times, key=times.get)


# Bytes of weights a timing cycles through: more than any GPU's L2 cache (H200: 60 MB), so each call reads its
# weight from memory as a step's layers do. Timed alone, a 32 MB o_proj would be served from L2.
COLD_WEIGHT_BYTES = 256 << 20
MAX_WEIGHT_COPIES = 8


def _cold_copies(layer: nn.Module) -> list:
    """`layer` and stand-ins holding their own copy of its weight (and its scales), COLD_WEIGHT_BYTES in all."""
    nbytes = layer.weight.numel() * layer.weight.element_size()
    n = min(MAX_WEIGHT_COPIES, max(1, -(-COLD_WEIGHT_BYTES // nbytes)))
    return [layer] + [SimpleNamespace(weight=layer.weight.clone(), weight_scale=getattr(layer, "weight_scale", None))
                      for _ in range(n - 1)]


def _in_turn(fns: list[Callable]) -> Callable:
    """One call: the next of `fns`, round robin."""
    turn = itertools.cycle(fns)
    return lambda: next(turn)()


def timed_cold(layer: nn.Module, calls: Callable[[object], dict[str, Callable]]) -> dict[str, float]:
    """timed() of calls(copy) for cold copies of `layer`'s weight, the copies used in turn."""
    per_copy = [calls(c) for c in _cold_copies(layer)]
    return timed({name: _in_turn([c[name] for c in per_copy]) for name in per_copy[0]})


def _race(scheme, model: nn.Module, dtype: torch.dtype, rows_list: Sequence[int],
          candidates: Callable[[nn.Module, torch.Tensor], dict[str, Callable]]) -> dict[tuple[int, int, int], str]:
    """{(N, K, rows): fastest of candidates(layer, x)} for x [rows, K] of each of `rows_list` and each distinct
    weight shape (N, K) of the linears of `model` that use `scheme`, each timed over cold copies of the weight."""
    layers = {tuple(m.weight.shape): m for m in model.modules() if getattr(m, "scheme", None) is scheme}
    winners = {}
    for (n, k), layer in layers.items():
        for rows in rows_list:
            x = torch.randn(rows, k, dtype=dtype, device=layer.weight.device)
            times = timed_cold(layer, lambda c: candidates(c, x))
            winners[(n, k, rows)] = min(times, key=times.get)
    return winners


BLAS_LIBRARIES = ("cublas", "cublaslt")


def blas_linear(library: str, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """F.linear with `library` preferred. The preference is process-global, so it holds for this call only;
    under CUDA graph capture the kernel it picked is what the graph replays."""
    previous = torch.backends.cuda.preferred_blas_library()
    torch.backends.cuda.preferred_blas_library(library)
    try:
        return F.linear(x, weight)
    finally:
        torch.backends.cuda.preferred_blas_library(previous)


# Tuned backends that are gemv.py kernels (the rest are BLAS libraries): the tensor-core GEMV for <= 32 rows, and
# the CUDA-core one for one row (written for fp8 weights; it streams bf16 too, and the race decides); and on GPUs
# with TMA the tensor-core GEMV fed by it, at the tiles of gemv.TMA_CONFIGS.
GEMV_KERNELS = {"triton": "gemv", "triton_row": "gemv_row"}


def gemv_call(name: str, x: torch.Tensor, weight: torch.Tensor, **fusion) -> torch.Tensor:
    """The tuned GEMV backend `name` (GEMV_KERNELS or gemv.TMA_CONFIGS); `fusion`: gemv's norm / add_to."""
    if name in gemv.TMA_CONFIGS:
        return gemv.gemv_tma(x, weight, gemv.TMA_CONFIGS[name], **fusion)
    return getattr(gemv, GEMV_KERNELS[name])(x, weight, **fusion)


class Unquantized:
    def __init__(self):
        self.backends: dict[tuple[int, int, int], str] = {}   # (N, K, rows) -> fastest backend (tune)
        # (N, K, rows) -> the GEMV that runs this linear with an RMSNorm folded in (fused_norms.tune)
        self.fused: dict[tuple[int, int, int], str] = {}

    def create(self, layer: nn.Module, out_features: int, in_features: int) -> None:
        layer.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)

    def store(self, layer: nn.Module, row: int, w: torch.Tensor) -> None:
        layer.weight.data[row:row + w.shape[0]].copy_(w)

    def apply(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        # a row count tune() timed for this weight shape (a decode graph's batch size): the backend that won
        backend = self.backends.get((*layer.weight.shape, x.shape[0])) if self.backends else None
        if backend in GEMV_KERNELS or backend in gemv.TMA_CONFIGS:
            return gemv_call(backend, x, layer.weight)
        if backend is not None:
            return blas_linear(backend, x, layer.weight)
        # decode-sized x: one weight-streaming Triton kernel instead of cuBLAS (PLAN_ENGINE_GEMV=triton)
        if gemv.wanted(x, layer.weight):
            return gemv.gemv(x, layer.weight)
        return F.linear(x, layer.weight)

    def apply_fused(self, layer: nn.Module, x: torch.Tensor, norm: gemv.Norm | None,
                    add_to: gemv.AddTo | None) -> torch.Tensor:
        """x @ W^T with an RMSNorm folded in (gemv.Norm / gemv.AddTo), on the GEMV fused_norms.tune chose."""
        return gemv_call(self.fused[(*layer.weight.shape, x.shape[0])], x, layer.weight, norm=norm, add_to=add_to)

    def tune(self, model: nn.Module, dtype: torch.dtype, rows_list: Sequence[int]) -> dict[str, dict[str, str]]:
        """Times cuBLAS, cuBLASLt and (<= gemv.MAX_ROWS rows) the Triton GEMV for every distinct weight shape of
        `model`'s linears of this scheme at each of `rows_list` (CUDA; before graphs are captured, which then
        hold the winners). Replaces earlier choices (schemes are shared by every model of the process), so an
        empty `rows_list` clears them. Returns {"NxK": {"rows": backend}}."""
        winners = _race(self, model, dtype, rows_list, self.candidates)
        if winners and parallel.size() > 1:
            # Rank 0's choices on every rank: replicated layers (LM head, MoE router) then round alike on all
            # ranks, as they do under one library (another kernel could route a token to another expert).
            winners = parallel.broadcast(winners)
        self.backends = winners
        report: dict[str, dict[str, str]] = {}
        for (n, k, rows), name in winners.items():
            report.setdefault(f"{n}x{k}", {})[str(rows)] = name
        return report

    @staticmethod
    def candidates(layer, x) -> dict[str, Callable[[], torch.Tensor]]:
        """The calls tune() races for x @ layer.weight^T (the profiler times the same ones)."""
        calls = {library: functools.partial(blas_linear, library, x, layer.weight) for library in BLAS_LIBRARIES}
        # the GEMVs where gemv.wanted would take them: an fp32 tl.dot would be tf32, less exact than cuBLAS
        if x.shape[0] <= gemv.MAX_ROWS and use_triton(x) and x.dtype in (torch.bfloat16, torch.float16):
            calls["triton"] = functools.partial(gemv.gemv, x, layer.weight)
            if x.shape[0] == 1:
                calls["triton_row"] = functools.partial(gemv.gemv_row, x, layer.weight)
        if gemv.tma_wanted(x):
            calls.update({name: functools.partial(gemv.gemv_tma, x, layer.weight, cfg)
                          for name, cfg in gemv.TMA_CONFIGS.items() if x.shape[1] % cfg["BLOCK_K"] == 0})
        return calls


class _PerRow(Unquantized):
    qdtype: torch.dtype

    def create(self, layer, out_features, in_features):
        layer.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=self.qdtype), requires_grad=False)
        layer.weight_scale = nn.Parameter(torch.empty(out_features, dtype=torch.float32), requires_grad=False)

    def store(self, layer, row, w):
        q, scale = quantize_rows(w, self.qdtype)
        layer.weight.data[row:row + w.shape[0]].copy_(q)
        layer.weight_scale.data[row:row + w.shape[0]].copy_(scale)


class Int8(_PerRow):
    qdtype = torch.int8

    def apply(self, layer, x):
        return F.linear(x, layer.weight.to(x.dtype)) * layer.weight_scale.to(x.dtype)


# Rows at which the weight-only GEMV and quantization + _scaled_mm race (one row always takes the GEMV's
# CUDA-core kernel, near the bandwidth floor). Which wins depends on the layer's size: on an H200 the GEMV's
# tensor-core kernel streams a 70B layer at ~0.3 of bandwidth, where _scaled_mm at 32 rows was faster than it at 8.
# The cost model prices the choices the engine reports at these buckets, so they live with it.
TUNED_ROWS = FP8_TUNED_ROWS


class Fp8(_PerRow):
    qdtype = FP8

    def __init__(self):
        self.gemv_wins: dict[tuple[int, int, int], bool] = {}   # (N, K, rows bucket) -> GEMV faster

    def apply(self, layer, x):
        # decode-sized x: weight-only Triton GEMV (fp8 tiles widened in registers), no activation quantization,
        # unless quantization + _scaled_mm was timed faster for this shape (tune)
        if gemv.fp8_wanted(x) and (x.shape[0] == 1 or self.gemv_wins.get(self._key(layer, x.shape[0]), True)):
            return gemv.gemv(x, layer.weight, scale=layer.weight_scale)
        return self._quantized(layer, x)

    @staticmethod
    def _key(layer, rows: int) -> tuple[int, int, int]:
        return (*layer.weight.shape, next(r for r in TUNED_ROWS if r >= rows))

    def tune(self, model: nn.Module, dtype: torch.dtype) -> dict[str, list[int]]:
        """Time both paths at each of TUNED_ROWS for every distinct fp8 weight shape of `model` (CUDA; before
        graphs are captured, which then hold the winner). Returns {"NxK": [rows where the GEMV won]}."""
        winners = _race(self, model, dtype, TUNED_ROWS, lambda layer, x: {     # the GEMV first: it wins ties
            "gemv": functools.partial(gemv.gemv, x, layer.weight, scale=layer.weight_scale),
            "scaled_mm": functools.partial(self._quantized, layer, x)})
        self.gemv_wins.update({key: name == "gemv" for key, name in winners.items()})
        shapes = dict.fromkeys(key[:2] for key in winners)
        return {f"{n}x{k}": [r for r in TUNED_ROWS if self.gemv_wins[(n, k, r)]] for n, k in shapes}

    def _quantized(self, layer, x):
        xq, xs = quantize_tokens_fp8(x)
        if x.is_cuda:
            # _scaled_mm wants the second operand column-major: the [out, in] weight's transpose is exactly that.
            # Fast accumulation, as vLLM's CUTLASS fp8 kernels do (and as the profiler times this call): without
            # it Hopper promotes partial sums often and a 2k-token fp8 step ran barely faster than bf16.
            return torch._scaled_mm(xq, layer.weight.t(), scale_a=xs, scale_b=layer.weight_scale[None, :],
                                    out_dtype=x.dtype, use_fast_accum=True)
        return ((xq.float() @ layer.weight.float().t()) * xs * layer.weight_scale).to(x.dtype)


SCHEMES = {"none": Unquantized(), "fp8": Fp8(), "int8": Int8()}


# --------------------------------------------------------------------------- per-token fp8 activations
def quantize_tokens_fp8_torch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q [T, k] fp8, scale [T, 1] fp32)."""
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


if triton is not None:
    @triton.jit
    def _quantize_tokens_fp8_kernel(x_ptr, q_ptr, s_ptr, n, stride_x, stride_q, FMAX: tl.constexpr,
                                    BLOCK: tl.constexpr):
        # One program per token: a pass for the row's absmax, a pass to scale and cast (one launch, not ~7).
        row = tl.program_id(0).to(tl.int64)
        amax = tl.zeros([BLOCK], tl.float32)
        for c in range(0, n, BLOCK):
            cols = c + tl.arange(0, BLOCK)
            x = tl.load(x_ptr + row * stride_x + cols, mask=cols < n, other=0.0).to(tl.float32)
            amax = tl.maximum(amax, tl.abs(x))
        scale = tl.maximum(tl.max(amax, axis=0), 1e-12) / FMAX
        tl.store(s_ptr + row, scale)
        for c in range(0, n, BLOCK):
            cols = c + tl.arange(0, BLOCK)
            x = tl.load(x_ptr + row * stride_x + cols, mask=cols < n, other=0.0).to(tl.float32)
            q = tl.minimum(tl.maximum(x / scale, -FMAX), FMAX)
            tl.store(q_ptr + row * stride_q + cols, q.to(q_ptr.dtype.element_ty), mask=cols < n)


def quantize_tokens_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not use_triton(x):
        return quantize_tokens_fp8_torch(x)
    x = x.contiguous()
    q = torch.empty(x.shape, dtype=FP8, device=x.device)
    scale = torch.empty(x.shape[0], 1, dtype=torch.float32, device=x.device)
    _quantize_tokens_fp8_kernel[(x.shape[0],)](x, q, scale, x.shape[1], x.stride(0), q.stride(0),
                                               FMAX=FP8_MAX, BLOCK=1024, num_warps=4)
    return q, scale
