"""The engine benchmark's roofline floor (benchmarks/bench_engine.py), on CPU."""
import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

spec = importlib.util.spec_from_file_location("bench_engine", Path(__file__).parents[1] / "benchmarks" / "bench_engine.py")
bench_engine = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_engine)


class Linear(torch.nn.Module):
    def __init__(self, n: int, k: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(n, k, dtype=torch.bfloat16))
        self.scheme = "none"      # what marks the engine's linears


def test_gemm_excess_counts_only_compute_bound_linears():
    model = torch.nn.Sequential(Linear(64, 32), Linear(32, 128), torch.nn.Embedding(1000, 32))
    copy_bw, gemm_flops = 1e12, 100e12      # the knee: 100 FLOPs per weight byte = 100 rows of bf16
    assert bench_engine.gemm_excess_s(model, 100, copy_bw, gemm_flops) == pytest.approx(0.0)
    weight_bytes = 2 * (64 * 32 + 32 * 128)             # the embedding table is not a linear
    expected = 2 * 400 * (64 * 32 + 32 * 128) / gemm_flops - weight_bytes / copy_bw
    assert bench_engine.gemm_excess_s(model, 400, copy_bw, gemm_flops) == pytest.approx(expected)
    assert expected == pytest.approx(3 * weight_bytes / copy_bw)    # 4x the knee: compute takes 4x the bytes' time


def test_rescore_adds_the_roofline_to_a_saved_run():
    """A committed H200 run: at batch 256 the linears are compute-bound, so its step sits closer to the roofline than
    to the bytes floor; at batch 1 the two floors are one."""
    saved = Path(__file__).parents[1] / "benchmarks" / "results" / "engine_int32ctx_H200.json"
    rows = {r["batch"]: r for r in bench_engine.rescore(str(saved), bench_engine.LLAMA_31_8B)["decode"]}
    assert rows[1]["async_over_roofline"] == pytest.approx(rows[1]["async_over_floor"])
    assert rows[256]["roofline_ms"] > rows[256]["floor_ms"]
    assert rows[256]["async_over_roofline"] < rows[256]["async_over_floor"]
