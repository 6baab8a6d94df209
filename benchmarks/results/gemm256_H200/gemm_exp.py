"""Throwaway probe, kept with its result: can a Triton tensor-core GEMM with both operands fetched by TMA beat
cuBLAS / cuBLASLt on Llama-3.1-8B's decode linears at 128-256 rows (where batch 256's step is GEMM-bound: cuBLAS
runs them at ~0.77 of the large-GEMM ceiling)? Tile shapes, pipeline depths, warps, and split-K (fp32 atomics into
a zeroed buffer, then a cast) for the 4096-wide outputs. Each call reads a cold weight (copies cycled, as the
engine's linear race times them), timed as 10 calls replayed from one CUDA graph (quant._median_s).

  PYTHONPATH=. python3 benchmarks/results/gemm256_H200/gemm_exp.py OUT.json      # repository root, one GPU

Tidied after the run: the shape loop is `sweep`, which cublaslt_algos.py shares (same timings and checks; the JSON
names the candidate count `candidates`; the run's file has no such key).
"""
import functools
import itertools
import json
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from backends.engine.quant import _median_s, blas_linear

SHAPES = [(4096, 4096), (6144, 4096), (4096, 14336), (28672, 4096), (128256, 4096)]
ROWS = (256, 128, 192)
dev = torch.device("cuda")


@triton.jit
def _gemm_kernel(x_desc, w_desc, out_ptr, M, N, k_per, stride_om, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr, GROUP_N: tl.constexpr):
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    # n-tiles grouped so programs running together share weight tiles through L2
    group = pid // (GROUP_N * tiles_m)
    first_n = group * GROUP_N
    group_size = tl.minimum(tl.cdiv(N, BLOCK_N) - first_n, GROUP_N)
    pid_n = first_n + (pid % (GROUP_N * tiles_m)) % group_size
    pid_m = (pid % (GROUP_N * tiles_m)) // group_size
    split = tl.program_id(1)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, k_per, BLOCK_K):
        a = x_desc.load([pid_m * BLOCK_M, split * k_per + k0])
        b = w_desc.load([pid_n * BLOCK_N, split * k_per + k0])
        acc = tl.dot(a, b.T, acc)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    ptrs = out_ptr + rm[:, None] * stride_om + rn[None, :]
    if SPLIT_K == 1:
        tl.store(ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        tl.atomic_add(ptrs, acc, mask=mask, sem="relaxed")


def gemm(x, w, cfg):
    M, K = x.shape
    N = w.shape[0]
    bm, bn, bk, sk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"], cfg["SPLIT_K"]
    assert K % (bk * sk) == 0       # each split a whole number of BLOCK_K steps (k_per = K / splits)
    xd = TensorDescriptor.from_tensor(x, [bm, bk])
    wd = TensorDescriptor.from_tensor(w, [bn, bk])
    grid = (triton.cdiv(M, bm) * triton.cdiv(N, bn), sk)
    if sk == 1:
        out = torch.empty(M, N, dtype=x.dtype, device=x.device)
    else:
        out = torch.zeros(M, N, dtype=torch.float32, device=x.device)
    _gemm_kernel[grid](xd, wd, out, M=M, N=N, k_per=K // sk, stride_om=out.stride(0), BLOCK_M=bm, BLOCK_N=bn,
                       BLOCK_K=bk, SPLIT_K=sk, GROUP_N=cfg["GROUP_N"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return out if sk == 1 else out.to(x.dtype)


def configs(n):
    for bm, bn, bk, stages, warps in itertools.product((64, 128), (64, 128, 256), (64, 128), (3, 4), (4, 8)):
        if (bm * bk + bn * bk) * 2 * stages > 220 * 1024 or (bm == 64 and warps == 8):
            continue
        for sk in ((1, 2, 4) if n == 4096 and bn <= 128 else (1,)):
            yield dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, SPLIT_K=sk, GROUP_N=8, num_warps=warps,
                       num_stages=stages)


def name(c):
    return f"{c['BLOCK_M']}x{c['BLOCK_N']}x{c['BLOCK_K']}s{c['num_stages']}w{c['num_warps']}k{c['SPLIT_K']}"


def sweep(out_path, candidates, meta=None, top=5):
    """For each shape and row count: torch's cuBLAS and cuBLASLt, then each of `candidates(x, w0)` ({name: call of a
    weight}, w0 the weight to check against F.linear with), timed on cold weight copies; rows written to out_path as
    they come. A candidate that needs more shared memory than the GPU has is left out; one that fails otherwise is
    noted."""
    result = {"device": torch.cuda.get_device_name(), "uuid": str(torch.cuda.get_device_properties(0).uuid),
              "torch": torch.__version__, **(meta or {}), "rows": []}
    for n, k in SHAPES:
        copies = [torch.randn(n, k, dtype=torch.bfloat16, device=dev) * 0.02
                  for _ in range(max(1, min(8, -(-(256 << 20) // (n * k * 2)))))]
        for m in ROWS:
            x = torch.randn(m, k, dtype=torch.bfloat16, device=dev)
            ref = F.linear(x, copies[0]).float()
            flops = 2 * m * n * k

            def timed(call):
                it = itertools.cycle(copies)
                return _median_s(lambda: call(next(it))) * 1e6
            row = {"n": n, "k": k, "rows": m, "us": {lib: timed(lambda w, lib=lib: blas_linear(lib, x, w))
                                                     for lib in ("cublas", "cublaslt")}}
            calls = candidates(x, copies[0])
            row["candidates"] = len(calls)
            for key, call in calls.items():
                try:
                    if not torch.allclose(call(copies[0]).float(), ref, atol=2e-2, rtol=2e-2):
                        row["us"][key] = "mismatch"
                        continue
                    row["us"][key] = timed(call)
                except triton.OutOfResources:
                    continue
                except Exception as e:      # a throwaway probe: note a candidate that fails, go on
                    row["us"][key] = f"error: {type(e).__name__}: {str(e)[:200]}"
                    print(key, row["us"][key], flush=True)
            blas = min(row["us"]["cublas"], row["us"]["cublaslt"])
            best_us, best = min((v, c) for c, v in row["us"].items() if isinstance(v, float))
            row.update(best=best, best_us=best_us, blas_us=blas)
            print(f"{n}x{k} rows {m}: torch's best {blas:.1f} us ({flops / blas / 1e6:.0f} TFLOP/s), "
                  f"best {best} {best_us:.1f} us ({flops / best_us / 1e6:.0f})", flush=True)
            ranked = sorted((v, c) for c, v in row["us"].items() if isinstance(v, float))[:top]
            print("   top:", ", ".join(f"{c} {v:.1f}" for v, c in ranked), flush=True)
            result["rows"].append(row)
            with open(out_path, "w") as f:
                json.dump(result, f, indent=1)


def main(out_path):
    sweep(out_path, lambda x, w0: {name(cfg): functools.partial(lambda w, cfg: gemm(x, w, cfg), cfg=cfg)
                                   for cfg in configs(w0.shape[0])}, {"triton": triton.__version__})


if __name__ == "__main__":
    main(sys.argv[1])
