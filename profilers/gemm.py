"""GEMM throughput for one LLM-shaped problem y[M,N] = x[M,K] @ W[N,K]^T in one of three paths:
bf16 (F.linear), fp8 (torch._scaled_mm, e4m3, row-wise scales) and weight-only int8 (int8 weights
turned to bf16, then a bf16 matmul: backends/engine has no quantized linear yet, so this is the plain
dequantize-then-matmul path it would start from)."""
from __future__ import annotations

from profilers.context import BenchContext
from profilers.sweeps import GemmPoint
from profilers.timing import rotation_sets


def _weight_only_int8(x, w_int8, scale):
    import torch
    import torch.nn.functional as F

    # Scaling the [M,N] output instead of the [N,K] weight is one small multiply per token row.
    return F.linear(x, w_int8.to(torch.bfloat16)) * scale


def _builder(point: GemmPoint, device: str):
    """(bytes per input set, make_set() -> tensors, op(*tensors)) for one dtype path."""
    import torch
    import torch.nn.functional as F

    m, n, k = point.m, point.n, point.k
    if point.dtype == "bf16":
        def make():
            return (torch.randn(m, k, dtype=torch.bfloat16, device=device),
                    torch.randn(n, k, dtype=torch.bfloat16, device=device))
        return 2 * (m * k + n * k + m * n), make, F.linear
    if point.dtype == "fp8":
        fp8 = torch.float8_e4m3fn
        # Row-wise scales (per token, per output channel): the built-in engine's and vLLM's fp8 scheme. M as the
        # engine runs it, unpadded (cuBLASLt takes any M; it picks other kernels for 8 rows than for 16).
        scale_a = torch.ones(m, 1, dtype=torch.float32, device=device)
        scale_b = torch.ones(1, n, dtype=torch.float32, device=device)

        def make():
            x = torch.randn(m, k, device=device).to(fp8)
            w = torch.randn(n, k, device=device).to(fp8)
            return x, w.t()                     # column-major weight, as _scaled_mm requires

        def op(x, w_t):
            return torch._scaled_mm(x, w_t, scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16,
                                    use_fast_accum=True)
        return m * k + n * k + 2 * m * n, make, op
    if point.dtype == "int8":
        def make():
            return (torch.randn(m, k, dtype=torch.bfloat16, device=device),
                    torch.randint(-127, 128, (n, k), dtype=torch.int8, device=device),
                    torch.rand(n, dtype=torch.bfloat16, device=device) / 64)
        return 2 * m * k + n * k + 2 * n + 2 * m * n, make, _weight_only_int8
    raise ValueError(f"unknown GEMM dtype {point.dtype!r}")


def weight_bytes(point: GemmPoint) -> int:
    return point.n * point.k * (2 if point.dtype == "bf16" else 1)


def tuned_rows() -> int:
    """Up to this many rows the built-in engine runs a bf16 linear on whichever BLAS library it timed faster for
    the shape (its decode CUDA-graph sizes at the default max_num_seqs; backends.engine.quant.Unquantized.tune)."""
    from backends.engine.config import EngineConfig
    from backends.engine.model_runner import graph_batch_sizes

    return graph_batch_sizes(EngineConfig.max_num_seqs)[-1]


def measure_gemm(ctx: BenchContext, point: GemmPoint) -> dict:
    set_bytes, make, op = _builder(point, ctx.device)
    sets = [make() for _ in range(rotation_sets(set_bytes, ctx.cache_bytes))]
    extra = {}
    if point.dtype == "bf16" and ctx.device == "cuda" and point.m <= tuned_rows():
        # As the engine runs it: the fastest of the backends its start-up race times for this shape (cuBLAS,
        # cuBLASLt and, at few rows, its Triton GEMVs; none wins everywhere).
        from types import SimpleNamespace

        from backends.engine.quant import Unquantized

        per_set = [Unquantized.candidates(SimpleNamespace(weight=w), x) for x, w in sets]
        by_library = {lib: ctx.timer.time(lambda i, lib=lib: per_set[i][lib](), len(sets)) for lib in per_set[0]}
        library = min(by_library, key=lambda lib: by_library[lib].seconds)
        timing = by_library[library]
        extra = {"library": library, "seconds_by_library": {lib: t.seconds for lib, t in by_library.items()}}
    else:
        timing = ctx.timer.time(lambda i: op(*sets[i]), len(sets))
    if point.dtype == "fp8" and ctx.device == "cuda":
        extra = _fp8_gemv(ctx, point, sets)
    return {"dtype": point.dtype, "m": point.m, "n": point.n, "k": point.k, "layer": point.layer,
            "seconds": timing.seconds, "flops": 2.0 * point.m * point.n * point.k,
            "weight_bytes": weight_bytes(point), "timing": timing.mode, **extra}


def _fp8_gemv(ctx: BenchContext, point: GemmPoint, sets: list) -> dict:
    """At decode rows (<= 16) the engine runs fp8 weights through its weight-only Triton GEMV (bf16 x, no
    activation quantization), which the cost model prices on its own terms: timed beside _scaled_mm, over the
    same weights."""
    import torch

    from backends.engine import gemv
    from backends.engine.kernels import use_triton

    x = torch.randn(point.m, point.k, dtype=torch.bfloat16, device=ctx.device)
    if point.m > gemv.FP8_MAX_ROWS or not use_triton(x):
        return {}
    scale = torch.ones(point.n, dtype=torch.float32, device=ctx.device)
    timing = ctx.timer.time(lambda i: gemv.gemv(x, sets[i][1].t(), scale=scale), len(sets))
    return {"gemv_seconds": timing.seconds}


def gemm_notes() -> dict:
    return {"bf16": "torch.nn.functional.linear, bf16 in and out; up to the engine's largest decode graph (M <= "
                    f"{tuned_rows()}) the fastest of the backends the engine's start-up race times (cuBLAS, cuBLASLt "
                    "and at M <= 32 its Triton GEMVs)",
            "fp8": "torch._scaled_mm e4m3 x e4m3 -> bf16, row-wise scales, use_fast_accum, M unpadded (profiles "
                   "before 2026-12-02's eighth session padded it to 16); activation quantization not timed; at "
                   "M <= 16 also the engine's weight-only Triton GEMV (`gemv_seconds`)",
            "int8": "weight-only int8: int8 weight .to(bf16), F.linear, per-channel scale on the output; "
                    "efficiency against the bf16 peak, its compute dtype (planner.costmodel.COMPUTE_DTYPE)"}
