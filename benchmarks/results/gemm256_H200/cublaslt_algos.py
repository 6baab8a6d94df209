"""Throwaway probe, kept with its result: torch's cuBLASLt path runs the first algorithm cuBLASLt's heuristic
returns. Does another of the algorithms it offers (tiles, split-K, stream-K) run Llama-3.1-8B's decode linears
at 128-256 rows faster? Each candidate is checked against F.linear, then timed as the engine's linear race times
(cold weight copies, 10 calls replayed from one CUDA graph: quant._median_s).

  PYTHONPATH=. python3 benchmarks/results/gemm256_H200/cublaslt_algos.py OUT.json      # repository root, one GPU

Tidied after the runs: the shape loop is gemm_exp.sweep, and the ctypes binding became the engine's
(backends/engine/cublaslt.py, which the linear race now uses; same calls). The runs' JSON names each candidate
`algo{i}_ws{workspace bytes}_waves{waves}` and the candidate count `algos`; now they are cublaslt_algo{i}.
"""
import functools
import os
import sys

sys.path.insert(0, "benchmarks/results/gemm256_H200")
from gemm_exp import sweep  # noqa: E402

from backends.engine import cublaslt  # noqa: E402


def main(out_path):
    os.environ["PLAN_ENGINE_LT_ALGOS"] = "8"     # every algorithm the heuristic offers

    def candidates(x, w0):
        return {name: functools.partial(lambda w, name: cublaslt.linear(name, x, w), name=name)
                for name in cublaslt.algo_names(x, w0)}
    sweep(out_path, candidates, top=4)


if __name__ == "__main__":
    main(sys.argv[1])
