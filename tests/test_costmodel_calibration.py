"""The cost model against the held-out microbenchmarks of the committed measured profiles."""
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
