"""Profilers on the CPU: the real code paths with tiny sizes (the GPU runs the same code, bigger)."""
from __future__ import annotations

import sys
import types

import pytest

pytest.importorskip("torch")

from planner.schemas import CurvePoint, HardwareProfile
from profilers import fit
from profilers.device import catalog_name, detect_gpus
from profilers.errors import ProfilerError
from profilers.runner import ProfileOptions, run_profile, selected_benchmarks
from profilers.timing import rotation_sets


@pytest.fixture(scope="module")
def cpu_profile(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile") / "CPU.yaml"
    run_profile(ProfileOptions(device="cpu", skip=["collectives"], out=out, progress=False, command="test"))
    return out


def test_cpu_run_writes_a_valid_profile_with_curves(cpu_profile):
    hw = HardwareProfile.load(cpu_profile)              # pydantic validation of the file as written
    eff = hw.efficiency
    assert hw.provenance.kind == "measured" and hw.provenance.torch and hw.provenance.duration_s > 0
    assert set(eff.gemm_by_m) == {"bf16", "fp8", "int8"}
    assert all(len(curve) == 3 for curve in eff.gemm_by_m.values())        # M in {1, 8, 32}
    assert [p.x for p in eff.gemm_by_m["bf16"]] == [1.0, 8.0, 32.0]
    assert len(eff.memory_by_bytes) == 4 and all(p.y > 0 for p in eff.memory_by_bytes)
    assert 0 < eff.attention_compute and 0 < eff.attention_memory
    assert 0 < eff.kernel_overhead_s < 1e-3
    measured = hw.measured
    assert measured["run"]["failures"] == []
    assert measured["datasheet"] == "synthetic"
    assert len(measured["gemm"]) == 18 and all(r["seconds"] > 0 for r in measured["gemm"])
    assert measured["attention"]["prefill"] and measured["attention"]["decode"]
    assert len(measured["holdout"]["gemm"]) == 2 and len(measured["holdout"]["copy"]) == 2


def test_cli_only_bandwidth(tmp_path):
    typer_testing = pytest.importorskip("typer.testing")
    import typer

    from profilers.cli import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root():
        pass

    out = tmp_path / "bw.yaml"
    result = typer_testing.CliRunner().invoke(app, ["profile", "--device", "cpu", "--only", "bandwidth",
                                                    "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    hw = HardwareProfile.load(out)
    assert hw.efficiency.memory_by_bytes and not hw.efficiency.gemm_by_m


def test_unknown_benchmark_is_a_clear_error():
    with pytest.raises(ProfilerError, match="unknown benchmark 'gemmm'"):
        selected_benchmarks(ProfileOptions(only=["gemmm"]))


@pytest.mark.parametrize("args,needle", [(["--device", "tpu"], "unknown --device 'tpu'"),
                                         (["--device", "cpu", "--only", "foo"], "unknown benchmark 'foo'"),
                                         (["--device", "cpu", "--skip", "gemmm"], "unknown benchmark 'gemmm'")])
def test_usage_errors_exit_2_not_the_no_gpu_code(args, needle):
    import typer
    from typer.testing import CliRunner

    from profilers.cli import register

    app = typer.Typer()
    register(app)
    app.callback()(lambda: None)
    result = CliRunner().invoke(app, ["profile", *args, "--no-progress"])
    assert result.exit_code == 2 and needle in result.output and len(result.output.strip().splitlines()) == 1


def test_no_pynvml_gives_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)            # import pynvml -> ImportError
    with pytest.raises(ProfilerError, match="pynvml is not installed"):
        detect_gpus()


def test_no_driver_gives_one_line_error_and_exit_code(monkeypatch):
    fake = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def init():
        raise NVMLError("Driver Not Loaded")
    fake.NVMLError, fake.nvmlInit = NVMLError, init
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    typer_testing = pytest.importorskip("typer.testing")
    import typer

    from profilers.cli import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def _root():
        pass

    result = typer_testing.CliRunner().invoke(app, ["profile", "--device", "cuda", "--no-progress"])
    assert result.exit_code == ProfilerError.exit_code
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "no NVIDIA GPU or driver found" in lines[0]
    assert "Traceback" not in result.output


def _fake_nvml(name: str):
    """A pynvml stand-in describing two GPUs with 4 of 18 NVLinks up; unsupported queries raise."""
    fake = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass
    fake.NVMLError = NVMLError
    fake.NVML_CLOCK_SM, fake.NVML_CLOCK_MEM = 1, 2
    fake.NVML_FEATURE_ENABLED, fake.NVML_NVLINK_MAX_LINKS = 1, 18
    fake.nvmlInit = fake.nvmlShutdown = lambda: None
    fake.nvmlDeviceGetCount = lambda: 2
    fake.nvmlDeviceGetHandleByIndex = lambda i: i
    fake.nvmlDeviceGetName = lambda h: name.encode()                       # old releases return bytes
    fake.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 << 30)
    fake.nvmlDeviceGetMaxClockInfo = lambda h, clock: 1980 if clock == 1 else 2619
    fake.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
    fake.nvmlDeviceGetPowerManagementLimit = lambda h: 700_000
    fake.nvmlDeviceGetMaxPcieLinkGeneration = lambda h: 5
    fake.nvmlDeviceGetMaxPcieLinkWidth = lambda h: 16

    def link_state(h, link):
        if link >= 6:
            raise NVMLError("Not Supported")
        return 1 if link < 4 else 0
    fake.nvmlDeviceGetNvLinkState = link_state
    fake.nvmlDeviceGetNvLinkVersion = lambda h, link: 4
    fake.nvmlSystemGetDriverVersion = lambda: "580.159.04"
    fake.nvmlSystemGetCudaDriverVersion = lambda: 13000
    return fake


def test_detection_through_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml("NVIDIA H100 80GB HBM3"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    info = detect_gpus()
    assert (info.catalog_name, info.count, info.driver) == ("H100-SXM", 2, "580.159.04")
    assert info.cuda_driver_version == "13.0"
    gpu = info.gpus[0]
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert (gpu.power_limit_w, gpu.pcie_generation, gpu.pcie_width) == (700.0, 5, 16)
    assert (gpu.nvlink_links_active, gpu.nvlink_links_total, gpu.nvlink_version) == (4, 6, 4)
    assert detect_gpus(max_gpus=1).count == 1


@pytest.mark.parametrize("device_name, expected", [
    ("NVIDIA H200", "H200"), ("NVIDIA H100 80GB HBM3", "H100-SXM"), ("NVIDIA H100 PCIe", "H100-PCIe"),
    ("NVIDIA A100-SXM4-80GB", "A100-80GB-SXM"), ("NVIDIA L40S", "L40S"), ("NVIDIA L4", "L4"),
    ("NVIDIA A10G", "A10G"), ("NVIDIA GeForce RTX 4090", "RTX-4090"), ("NVIDIA B200", "B200"),
])
def test_catalog_names(device_name, expected):
    assert catalog_name(device_name) == expected
    catalog = pytest.importorskip("planner.catalog")
    assert catalog.resolve_hardware_name(expected) == expected


def test_gloo_collectives_two_processes_merged_into_profile(cpu_profile, tmp_path):
    out = tmp_path / "with_collectives.yaml"
    run_profile(ProfileOptions(device="cpu", collectives_only=True, gpus=2, merge_into=cpu_profile, out=out,
                               progress=False, command="test"))
    hw = HardwareProfile.load(out)
    run = hw.measured["collectives"]["runs"]["2"]
    assert run["sizes"] == [4 << 10, 64 << 10]
    assert len(run["all_reduce"]) == len(run["all_gather"]) == 2
    assert all(t > 0 for t in run["all_reduce"] + run["all_gather"])
    assert [p.x for p in hw.efficiency.allreduce_by_bytes["2"]] == [4096.0, 65536.0]
    # both sizes are small messages: alpha is their median
    assert hw.efficiency.allreduce_alpha_s == pytest.approx(sum(run["all_reduce"]) / 2)
    assert hw.efficiency.gemm_by_m == HardwareProfile.load(cpu_profile).efficiency.gemm_by_m


def test_failed_collectives_still_write_the_profile(monkeypatch, tmp_path):
    import profilers.collectives

    def broken(*args, **kwargs):
        raise ProfilerError("collective benchmark, rank 1: NCCL init failed on 2 processes: "
                            "unhandled system error")
    monkeypatch.setattr(profilers.collectives, "measure_collectives", broken)
    out = tmp_path / "p.yaml"
    with pytest.raises(ProfilerError, match="NCCL init failed.*written to"):
        run_profile(ProfileOptions(device="cpu", only=["launch", "collectives"], out=out, progress=False))
    assert HardwareProfile.load(out).measured["launch"]["eager_s_per_kernel"] > 0


def test_merge_collectives_into_existing_profile(cpu_profile, tmp_path):
    from profilers.device import detect_cpu
    from profilers.writer import merge_collectives

    hw = HardwareProfile.load(cpu_profile)
    sizes = [4 << 10, 1 << 20, 256 << 20, 1 << 30]
    runs = {n: {"n": int(n), "sizes": sizes, "all_reduce": [1e-5 * int(n)] * 2 + [2e-3, 8e-3],
                "all_gather": [1e-5] * 4, "all_reduce_graph": None, "notes": []} for n in ("2", "4")}
    merged = merge_collectives(hw, runs, detect_cpu(), "test")
    assert set(merged.efficiency.allreduce_by_bytes) == {"2", "4"}
    assert merged.efficiency.allreduce_alpha_s == pytest.approx(4e-5)          # from the largest group
    assert merged.efficiency.gemm_by_m == hw.efficiency.gemm_by_m               # the rest is kept
    out = tmp_path / "merged.yaml"
    merged.dump(out)
    assert HardwareProfile.load(out).measured["collectives"]["fits"]["4"]["alpha_s"] == pytest.approx(4e-5)


# --------------------------------------------------------------------------- fitting, synthetic data
def test_gemm_curve_is_median_over_shapes():
    rows = [{"dtype": "bf16", "m": m, "flops": 2.0 * m * 100, "seconds": 1.0, "weight_bytes": 100}
            for m in (1, 1, 1, 8, 8, 8) for _ in [0]]
    for row, scale in zip(rows, (1.0, 3.0, 2.0, 1.0, 1.0, 4.0)):
        row["seconds"] /= scale
    fit.annotate_gemm(rows, {"bf16": 1600.0}, bandwidth_bytes_per_s=1000.0)
    curve = fit.gemm_curves(rows)["bf16"]
    # M=1: flops/s = 200 x {1,3,2} -> efficiency {0.125, 0.375, 0.25}, median 0.25
    assert [(p.x, p.y) for p in curve] == [(1.0, pytest.approx(0.25)), (8.0, pytest.approx(1.0))]
    assert rows[0]["weight_bw_fraction"] == pytest.approx(0.1)


def test_fp8_gemv_fields_from_the_timed_gemv():
    """One row: latency and bandwidth fraction recovered from a line through time against bytes; 2-16 rows: the
    median fraction after that latency; no GEMV timings: nothing (the defaults stand)."""
    from planner.costmodel import fp8_gemv_bytes
    bw, lat = 1e12, 3e-6
    shapes = [(4096, 4096), (6144, 4096), (28672, 4096), (4096, 14336)]
    rows = [{"dtype": "fp8", "m": 1, "n": n, "k": k, "gemv_seconds": lat + fp8_gemv_bytes(1, n, k) / (bw * 0.8)}
            for n, k in shapes]
    rows += [{"dtype": "fp8", "m": 8, "n": n, "k": k, "gemv_seconds": lat + fp8_gemv_bytes(8, n, k) / (bw * 0.4)}
             for n, k in shapes]
    rows.append({"dtype": "fp8", "m": 32, "n": 4096, "k": 4096})          # _scaled_mm only
    got = fit.fp8_gemv_fields(rows, bw)
    assert got["fp8_gemv_latency_s"] == pytest.approx(lat)
    assert got["fp8_gemv_memory"] == pytest.approx(0.8)
    assert got["fp8_gemv_rows_memory"] == pytest.approx(0.4)
    # ... and the one-row GEMV shape by shape, by the bytes it moves (two shapes of one size: their median)
    assert [p.x for p in got["fp8_gemv_by_bytes"]] == sorted({fp8_gemv_bytes(1, n, k) for n, k in shapes})
    first = got["fp8_gemv_by_bytes"][0]
    assert first.y == pytest.approx(first.x / (lat + first.x / (bw * 0.8)) / bw)
    assert fit.fp8_gemv_fields([r for r in rows if r["m"] != 1], bw) == {}
    assert "fp8_gemv_memory" in fit.gemm_model_fields(
        [dict(r, weight_bytes=r["n"] * r["k"], seconds=1.0, efficiency=0.5) for r in rows], bw)


def test_weight_only_int8_is_measured_against_bf16_peak():
    rows = [{"dtype": "int8", "m": 16, "flops": 1000.0, "seconds": 1.0, "weight_bytes": 10}]
    fit.annotate_gemm(rows, {"bf16": 2000.0, "int8": 4000.0}, 1.0)
    assert rows[0]["efficiency"] == pytest.approx(0.5)


def test_allreduce_fit_recovers_alpha_and_busbw():
    alpha, busbw, n = 20e-6, 300e9, 4
    sizes = [4 << 10 << i for i in range(19)]                    # 4 KiB .. 1 GiB
    seconds = [alpha + fit.bus_bytes(b, n) / busbw for b in sizes]
    got_alpha, got_busbw = fit.allreduce_fit(sizes, seconds, n)
    assert got_alpha == pytest.approx(alpha, rel=0.05)
    assert got_busbw == pytest.approx(busbw, rel=0.01)
    assert fit.allreduce_fit([4096], [1e-5], 2) == (1e-5, None)


def test_memory_curve_and_plateau():
    rows = [{"bytes_moved": b, "seconds": b / (f * 100.0)} for b, f in ((1e6, 0.2), (1e9, 0.9), (1e8, 0.8))]
    curve = fit.memory_curve(rows, 100.0)
    assert [p.x for p in curve] == [1e6, 1e8, 1e9]
    assert [p.y for p in curve] == pytest.approx([0.2, 0.8, 0.9])
    assert fit.plateau(curve) == pytest.approx(0.85)
    assert fit.plateau([CurvePoint(x=1, y=0.5)]) == 0.5


def test_rotation_sets_exceed_the_cache():
    assert rotation_sets(1 << 20, 50 << 20, factor=4, max_sets=256) == 200
    assert rotation_sets(1 << 30, 50 << 20) == 1
    assert rotation_sets(1 << 20, 50 << 20) == 32                 # capped


def test_holdout_validation_table(cpu_profile):
    from profilers import validate

    costmodel = pytest.importorskip("planner.costmodel")
    for name in ("gemm_time_s", "copy_time_s"):
        if not hasattr(costmodel, name):
            pytest.skip(f"planner.costmodel.{name} does not exist yet")
    rows = validate.holdout_errors(HardwareProfile.load(cpu_profile))
    assert len(rows) == 4 and all(r["predicted_s"] > 0 for r in rows)
    table = validate.markdown(rows)
    assert table.startswith("| kind | point |") and "median absolute error" in table


# --------------------------------------------------------------------------- CUDA timer control flow
class _FakeCuda:
    """Just enough of torch.cuda for CudaTimer: events read a host clock, a 'graph' records the calls
    made while capturing and replays them. `fail_capture` makes capture raise, as unsupported work does."""

    def __init__(self, fail_capture=False):
        import contextlib
        import time as time_lib

        self.fail_capture, self.captures, self.capturing = fail_capture, 0, False
        fake = self

        class Event:
            def __init__(self, enable_timing=False):
                self.t = None

            def record(self):
                self.t = time_lib.perf_counter()

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                return (end.t - self.t) * 1e3

        class Stream:
            def wait_stream(self, other):
                pass

        class CUDAGraph:
            def __init__(self):
                self.body = None

            def replay(self):
                self.body()

        @contextlib.contextmanager
        def graph(g, capture_error_mode="global"):
            fake.captures += 1
            if fake.fail_capture:
                raise RuntimeError("operation not permitted when stream is capturing")
            fake.capturing = True
            yield
            fake.capturing = False

        self.Event, self.Stream, self.CUDAGraph, self.graph = Event, Stream, CUDAGraph, graph
        self.stream = lambda s: contextlib.nullcontext()
        self.current_stream = lambda: Stream()
        self.synchronize = lambda: None


def _fake_cuda_timer(fail_capture):
    from profilers.timing import CudaTimer

    timer = CudaTimer(warmup=2, repeats=3, target_s=1e-4, max_calls=50)
    cuda = _FakeCuda(fail_capture)
    timer.torch = types.SimpleNamespace(cuda=cuda)
    original = timer.capture

    def capture(body, capture_error_mode="global"):
        graph = original(body, capture_error_mode)
        if graph is not None:
            graph.body = body                    # the fake graph replays by calling the body again
        return graph
    timer.capture = capture
    return timer, cuda


@pytest.mark.parametrize("fail_capture, mode", [(False, "graph"), (True, "eager")])
def test_cuda_timer_graph_and_eager_fallback(fail_capture, mode):
    import time as time_lib

    timer, cuda = _fake_cuda_timer(fail_capture)
    used = []

    def fn(i):
        used.append(i)
        time_lib.sleep(2e-5)
    timing = timer.time(fn, n_sets=4)
    assert timing.mode == mode and cuda.captures == 1
    assert timing.calls >= 4 and set(used) == {0, 1, 2, 3}         # every input set takes part
    assert 1e-5 < timing.seconds < 1e-2


def test_missing_merge_target_fails_before_measuring(tmp_path):
    with pytest.raises(ProfilerError, match="no such profile file"):
        run_profile(ProfileOptions(device="cpu", collectives_only=True, merge_into=tmp_path / "nope.yaml",
                                   progress=False))


def test_engine_eager_interval_is_the_eager_kernel_cost_and_decode_latency_fitted():
    """The writer takes the engine's own eager issue interval over a bare launch, and a decode-attention call's
    fixed time from the rows that fill the GPU (what is left beyond the stream at the biggest rows' efficiency)."""
    from planner import catalog
    from profilers.writer import apply_measurements

    base = catalog.load_hardware("H200", "datasheet")
    bw = base.memory_bandwidth_bytes_per_s
    decode = [{"batch": b, "context": c, "head_dim": 128, "kv_bytes": kv, "seconds": 8e-6 + kv / (0.9 * bw)}
              for b, c in ((8, 512), (8, 2048), (8, 8192), (32, 32768), (128, 8192)) for kv in [b * c * 4096]]
    decode.append({"batch": 1, "context": 8192, "head_dim": 128, "kv_bytes": 8192 * 4096, "seconds": 3e-5})
    launch = {"n_kernels": 10, "eager_s_per_kernel": 8e-6, "graph_s_per_kernel": 1e-6}
    eff, _ = apply_measurements(base, {"launch": launch, "decode": decode})
    assert eff.kernel_overhead_s == 8e-6 and eff.graph_kernel_overhead_s == 1e-6
    assert eff.attention_memory == pytest.approx(0.9, rel=0.01)
    assert eff.attention_decode_latency_s == pytest.approx(8e-6, rel=0.1)      # batch 1 (slow, few programs) left out
    eff, _ = apply_measurements(base, {"launch": {**launch, "engine_eager_s_per_kernel": 5e-5}, "decode": decode})
    assert eff.kernel_overhead_s == 5e-5
