"""The algorithms cuBLASLt offers for a bf16/fp16 linear beyond the one torch runs, called through ctypes.

torch's cuBLASLt path runs the first algorithm the library's heuristic returns for a shape. On an H200 another of the
algorithms it offers ran Llama-3.1-8B's gate_up 6-9% faster at 128 and 192 rows (benchmarks/results/gemm256_H200/),
so the linear race (quant.Unquantized.tune) times the heuristic's first few beside cuBLAS and torch's cuBLASLt, and
the decode CUDA graphs replay the winner. Calls go to the cuBLASLt library torch has loaded, on torch's current
stream, with one workspace per device; the library, not this module, computes the product.
"""
from __future__ import annotations

import ctypes
import functools
import os

import torch
import torch.nn.functional as F

ALGO_PREFIX = "cublaslt_algo"
WORKSPACE_BYTES = 32 << 20
# Pointers the heuristic assumes by default (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES): other inputs take F.linear.
ALIGNMENT_BYTES = 256

# cublasLt.h / library_types.h
_DATA_TYPES = {torch.float16: 2, torch.bfloat16: 14}
_CUDA_R_32F, _COMPUTE_32F = 0, 68
_DESC_TRANSA, _OP_T = 3, 1
_PREF_MAX_WORKSPACE_BYTES = 1


def algo_count() -> int:
    """PLAN_ENGINE_LT_ALGOS (default 4): how many of the heuristic's algorithms the race times; 0 turns them off.
    Past the fourth none won a Llama-3.1-8B linear at 128-256 rows on an H200."""
    value = os.environ.get("PLAN_ENGINE_LT_ALGOS", "4")
    if not value.isdigit():
        raise ValueError(f"PLAN_ENGINE_LT_ALGOS={value!r}: expected a count (0 turns the algorithms off)")
    return int(value)


class _Heuristic(ctypes.Structure):
    _fields_ = [("algo", ctypes.c_uint64 * 8), ("workspace_size", ctypes.c_size_t), ("state", ctypes.c_int),
                ("waves", ctypes.c_float), ("reserved", ctypes.c_int * 4)]


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"cublasLt{what}: status {status}")


@functools.cache
def _library() -> ctypes.CDLL | None:
    """libcublasLt as torch loaded it (one cuBLASLt product first makes torch load it); None where it is absent."""
    x = torch.zeros(8, 8, dtype=torch.bfloat16, device="cuda")
    previous = torch.backends.cuda.preferred_blas_library()
    try:
        torch.backends.cuda.preferred_blas_library("cublaslt")
        F.linear(x, x)
    except RuntimeError:
        return None
    finally:
        torch.backends.cuda.preferred_blas_library(previous)
    torch.cuda.synchronize()
    with open("/proc/self/maps") as maps:
        paths = sorted({line.split()[-1] for line in maps if "libcublasLt.so" in line})
    return ctypes.CDLL(paths[0]) if paths else None


@functools.cache
def _handle() -> ctypes.c_void_p:
    handle = ctypes.c_void_p()
    _check(_library().cublasLtCreate(ctypes.byref(handle)), "Create")
    return handle


@functools.cache
def _workspace(device: torch.device) -> torch.Tensor:
    return torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=device)


class _Product:
    """y [m, n] = x [m, k] @ w [n, k]^T, fp32 accumulation: column-major D = op(A) B with A = w (k x n, transposed)
    and B = x (k x m). Holds the descriptors and the algorithms the heuristic offers, best first."""

    def __init__(self, m: int, n: int, k: int, dtype: torch.dtype):
        lib, data_type = _library(), _DATA_TYPES[dtype]
        self.desc = ctypes.c_void_p()
        _check(lib.cublasLtMatmulDescCreate(ctypes.byref(self.desc), _COMPUTE_32F, _CUDA_R_32F), "MatmulDescCreate")
        op = ctypes.c_int32(_OP_T)
        _check(lib.cublasLtMatmulDescSetAttribute(self.desc, _DESC_TRANSA, ctypes.byref(op), ctypes.c_size_t(4)),
               "MatmulDescSetAttribute")
        self.a, self.b, self.c = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        for layout, (rows, cols) in ((self.a, (k, n)), (self.b, (k, m)), (self.c, (n, m))):
            _check(lib.cublasLtMatrixLayoutCreate(ctypes.byref(layout), data_type, ctypes.c_uint64(rows),
                                                  ctypes.c_uint64(cols), ctypes.c_int64(rows)), "MatrixLayoutCreate")
        pref = ctypes.c_void_p()
        _check(lib.cublasLtMatmulPreferenceCreate(ctypes.byref(pref)), "MatmulPreferenceCreate")
        workspace = ctypes.c_uint64(WORKSPACE_BYTES)
        _check(lib.cublasLtMatmulPreferenceSetAttribute(pref, _PREF_MAX_WORKSPACE_BYTES, ctypes.byref(workspace),
                                                        ctypes.c_size_t(8)), "MatmulPreferenceSetAttribute")
        wanted = 8
        results, returned = (_Heuristic * wanted)(), ctypes.c_int(0)
        _check(lib.cublasLtMatmulAlgoGetHeuristic(_handle(), self.desc, self.a, self.b, self.c, self.c, pref, wanted,
                                                  results, ctypes.byref(returned)), "MatmulAlgoGetHeuristic")
        lib.cublasLtMatmulPreferenceDestroy(pref)
        self.algos = [results[i] for i in range(returned.value) if results[i].state == 0]
        self.alpha, self.beta = ctypes.c_float(1.0), ctypes.c_float(0.0)
        self.shape = (m, n)

    def __call__(self, x: torch.Tensor, w: torch.Tensor, index: int) -> torch.Tensor:
        out = torch.empty(self.shape, dtype=x.dtype, device=x.device)
        stream = ctypes.c_void_p(torch.cuda.current_stream(x.device).cuda_stream)
        _check(_library().cublasLtMatmul(
            _handle(), self.desc, ctypes.byref(self.alpha), ctypes.c_void_p(w.data_ptr()), self.a,
            ctypes.c_void_p(x.data_ptr()), self.b, ctypes.byref(self.beta), ctypes.c_void_p(out.data_ptr()), self.c,
            ctypes.c_void_p(out.data_ptr()), self.c, ctypes.byref(self.algos[index].algo),
            ctypes.c_void_p(_workspace(x.device).data_ptr()), ctypes.c_size_t(WORKSPACE_BYTES), stream), "Matmul")
        return out


@functools.cache
def _product(m: int, n: int, k: int, dtype: torch.dtype) -> _Product:
    return _Product(m, n, k, dtype)


def _callable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (x.is_cuda and x.dim() == 2 and x.dtype in _DATA_TYPES and weight.dtype == x.dtype
            and x.is_contiguous() and weight.is_contiguous()
            and x.data_ptr() % ALIGNMENT_BYTES == 0 and weight.data_ptr() % ALIGNMENT_BYTES == 0
            and _library() is not None)


def algo_names(x: torch.Tensor, weight: torch.Tensor) -> list[str]:
    """The race's names for the first algo_count() algorithms cuBLASLt offers for x @ weight^T (none where they
    cannot run: off CUDA, another dtype, a strided or unaligned operand, no cuBLASLt)."""
    count = algo_count()
    if count == 0 or not _callable(x, weight):
        return []
    offered = len(_product(x.shape[0], weight.shape[0], x.shape[1], x.dtype).algos)
    return [f"{ALGO_PREFIX}{i}" for i in range(min(count, offered))]


def is_algo(name: str | None) -> bool:
    return name is not None and name.startswith(ALGO_PREFIX)


def linear(name: str, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x @ weight^T by the cuBLASLt algorithm `name` (algo_names) offers for this shape; F.linear where it cannot
    run (an operand that is strided or unaligned here although the race's were not)."""
    index = int(name[len(ALGO_PREFIX):])
    if not _callable(x, weight):
        return F.linear(x, weight)
    product = _product(x.shape[0], weight.shape[0], x.shape[1], x.dtype)
    if index >= len(product.algos):
        return F.linear(x, weight)
    return product(x, weight, index)
