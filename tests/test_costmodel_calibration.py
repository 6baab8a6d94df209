"""The cost model against the held-out microbenchmarks of the committed measured profiles."""
import math
import statistics

import pytest

from planner.costmodel import gemm_time_s
from planner.schemas import HardwareProfile
from profilers import validate
from profilers.refit import refit

PROFILES = ["hw_profiles/measured/H200.yaml", "hw_profiles/measured/H100-SXM.yaml"]


@pytest.mark.parametrize("path", PROFILES)
def test_holdout_median_error_within_5_percent(path):
    rows = validate.holdout_errors(HardwareProfile.load(path))
    assert statistics.median(abs(r["error"]) for r in rows) <= 0.05


@pytest.mark.parametrize("path", PROFILES)
def test_committed_fit_is_what_refit_gives(path):
    hw = HardwareProfile.load(path)
    assert refit(hw).efficiency == hw.efficiency


@pytest.mark.parametrize("path", PROFILES)
@pytest.mark.parametrize("dtype", ["bf16", "fp8", "int8"])
def test_gemm_time_never_decreases_with_m(path, dtype):
    hw = HardwareProfile.load(path)
    for n, k in [(1280, 8192), (6144, 4096), (57344, 8192), (64, 4096)]:
        times = [gemm_time_s(hw, m, n, k, dtype) for m in range(1, 20000, 37)]
        assert all(b >= a * (1 - 1e-12) for a, b in zip(times, times[1:]))


@pytest.mark.parametrize("path", PROFILES)
def test_weight_only_int8_pays_its_dequantize_pass(path):
    hw = HardwareProfile.load(path)
    assert gemm_time_s(hw, 16, 8192, 8192, "int8") > 2 * gemm_time_s(hw, 16, 8192, 8192, "bf16")


def test_a_profiled_bf16_shape_is_priced_from_its_own_times():
    """A bf16 layer shape the profile timed as the engine runs it costs what it measured: at a timed M exactly,
    log-log between two, linear in M past the largest; a shape it did not time, and fp8, keep the fitted curves."""
    hw = HardwareProfile.load(PROFILES[0])
    curve_8b_o = gemm_time_s(hw, 128, 4096, 4096)
    rows = [{"dtype": "bf16", "m": m, "n": 4000, "k": 4000, "seconds": s, "timing": "graph", "library": "cublas"}
            for m, s in ((1, 10e-6), (128, 20e-6), (1024, 100e-6))]
    timed = hw.model_copy(update={"measured": {**hw.measured, "gemm": rows}})
    assert gemm_time_s(timed, 128, 4000, 4000) == pytest.approx(20e-6)
    # 384 rows (whole 128-row tiles) between 128 and 1,024: log-log
    assert gemm_time_s(timed, 384, 4000, 4000) == pytest.approx(20e-6 * 5 ** (math.log(3) / math.log(8)))
    assert gemm_time_s(timed, 2048, 4000, 4000) == pytest.approx(200e-6)
    untimed = hw.model_copy(update={"measured": {**hw.measured, "gemm": []}})
    # rows of a profiler that did not time the engine's library race (no `library`) are not used
    older = hw.model_copy(update={"measured": {**hw.measured, "gemm": [
        {k: v for k, v in r.items() if k != "library"} for r in rows]}})
    assert gemm_time_s(older, 128, 4000, 4000) == gemm_time_s(untimed, 128, 4000, 4000)
    assert gemm_time_s(untimed, 128, 4000, 4000) != pytest.approx(20e-6, rel=0.05)
    assert gemm_time_s(timed, 128, 4000, 4000, "fp8") == gemm_time_s(untimed, 128, 4000, 4000, "fp8")
    assert curve_8b_o == pytest.approx(next(r["seconds"] for r in hw.measured["gemm"] if r["dtype"] == "bf16"
                                            and r["m"] == 128 and (r["n"], r["k"]) == (4096, 4096)), rel=1e-9)
