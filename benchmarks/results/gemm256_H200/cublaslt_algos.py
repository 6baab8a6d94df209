"""Throwaway probe, kept with its result: torch's cuBLASLt path runs the first algorithm cuBLASLt's heuristic
returns. Does another of the algorithms it offers (tiles, split-K, stream-K) run Llama-3.1-8B's decode linears
at 128-256 rows faster? cuBLASLt is called through ctypes (the library torch has loaded); each candidate is
checked against F.linear, then timed as the engine's linear race times (cold weight copies, 10 calls replayed
from one CUDA graph: quant._median_s).

  PYTHONPATH=. python3 benchmarks/results/gemm256_H200/cublaslt_algos.py OUT.json      # repository root, one GPU

Tidied after the run: the shape loop is gemm_exp.sweep (same timings and checks; the run's JSON calls the candidate
count `algos`).
"""
import ctypes
import functools
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, "benchmarks/results/gemm256_H200")
from gemm_exp import dev, sweep  # noqa: E402

from backends.engine.quant import blas_linear  # noqa: E402

WORKSPACE_BYTES = 32 << 20

# cublasLt.h / library_types.h
CUDA_R_32F, CUDA_R_16BF = 0, 14
CUBLAS_COMPUTE_32F = 68
DESC_TRANSA = 3
PREF_MAX_WORKSPACE_BYTES = 1
OP_T = 1


class Heuristic(ctypes.Structure):
    _fields_ = [("algo", ctypes.c_uint64 * 8), ("workspace_size", ctypes.c_size_t), ("state", ctypes.c_int),
                ("waves", ctypes.c_float), ("reserved", ctypes.c_int * 4)]


def _lib():
    F.linear(torch.zeros(8, 8, dtype=torch.bfloat16, device=dev), torch.zeros(8, 8, dtype=torch.bfloat16, device=dev))
    blas_linear("cublaslt", torch.zeros(8, 8, dtype=torch.bfloat16, device=dev),
                torch.zeros(8, 8, dtype=torch.bfloat16, device=dev))
    torch.cuda.synchronize()
    paths = {line.split()[-1] for line in open("/proc/self/maps") if "libcublasLt.so" in line}
    assert paths, "libcublasLt is not loaded"
    return ctypes.CDLL(sorted(paths)[0])


LT = _lib()


def check(status, what):
    if status != 0:
        raise RuntimeError(f"{what}: cublasLt status {status}")


class LtGemm:
    """y [M, N] = x [M, K] @ w [N, K]^T in bf16, fp32 accumulation, as column-major D = op(A) B with A = w
    (K x N, transposed) and B = x (K x M)."""

    def __init__(self, m, n, k):
        self.m, self.n, self.k = m, n, k
        self.handle = ctypes.c_void_p()
        check(LT.cublasLtCreate(ctypes.byref(self.handle)), "create")
        self.desc = ctypes.c_void_p()
        check(LT.cublasLtMatmulDescCreate(ctypes.byref(self.desc), CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc")
        op = ctypes.c_int32(OP_T)
        check(LT.cublasLtMatmulDescSetAttribute(self.desc, DESC_TRANSA, ctypes.byref(op), ctypes.c_size_t(4)), "transa")
        self.a, self.b, self.c = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        for lay, (rows, cols, ld) in ((self.a, (k, n, k)), (self.b, (k, m, k)), (self.c, (n, m, n))):
            check(LT.cublasLtMatrixLayoutCreate(ctypes.byref(lay), CUDA_R_16BF, ctypes.c_uint64(rows),
                                                ctypes.c_uint64(cols), ctypes.c_int64(ld)), "layout")
        self.pref = ctypes.c_void_p()
        check(LT.cublasLtMatmulPreferenceCreate(ctypes.byref(self.pref)), "pref")
        ws = ctypes.c_uint64(WORKSPACE_BYTES)
        check(LT.cublasLtMatmulPreferenceSetAttribute(self.pref, PREF_MAX_WORKSPACE_BYTES, ctypes.byref(ws),
                                                           ctypes.c_size_t(8)), "ws")
        self.workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=dev)
        self.alpha, self.beta = ctypes.c_float(1.0), ctypes.c_float(0.0)

    def algos(self, count=64):
        results = (Heuristic * count)()
        returned = ctypes.c_int(0)
        check(LT.cublasLtMatmulAlgoGetHeuristic(self.handle, self.desc, self.a, self.b, self.c, self.c, self.pref,
                                                count, results, ctypes.byref(returned)), "heuristic")
        return [results[i] for i in range(returned.value) if results[i].state == 0]

    def __call__(self, x, w, algo):
        out = torch.empty(self.m, self.n, dtype=torch.bfloat16, device=dev)
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        check(LT.cublasLtMatmul(self.handle, self.desc, ctypes.byref(self.alpha), ctypes.c_void_p(w.data_ptr()),
                                self.a, ctypes.c_void_p(x.data_ptr()), self.b, ctypes.byref(self.beta),
                                ctypes.c_void_p(out.data_ptr()), self.c, ctypes.c_void_p(out.data_ptr()), self.c,
                                ctypes.byref(algo.algo), ctypes.c_void_p(self.workspace.data_ptr()),
                                ctypes.c_size_t(WORKSPACE_BYTES), stream), "matmul")
        return out


def main(out_path):
    def candidates(x, w0):
        gemm = LtGemm(x.shape[0], w0.shape[0], x.shape[1])
        return {f"algo{i}_ws{a.workspace_size}_waves{a.waves:.2f}": functools.partial(lambda w, a: gemm(x, w, a), a=a)
                for i, a in enumerate(gemm.algos())}
    sweep(out_path, candidates, {"cublaslt_version": LT.cublasLtGetVersion()}, top=4)


if __name__ == "__main__":
    main(sys.argv[1])
