"""Per-shape linear backends (quant.Unquantized.tune): the selection among timed candidates, apply() following
an injected choice table, the PLAN_ENGINE_TUNE_LINEAR switch, and the runner reporting nothing tuned on CPU.
The timing itself needs CUDA: a GPU-only test at the end races the real backends and captures each in a graph."""
import pytest

torch = pytest.importorskip("torch")

from backends.engine import gemv, quant  # noqa: E402
from backends.engine.quant import Unquantized, fastest, tune_linear_enabled  # noqa: E402


def _fake_time_s(times_s: dict[str, float]):
    """A timer that runs the candidate (each returns its own name) and reports the time given for that name."""
    return lambda fn: times_s[fn()]


def _named(*names):
    return {name: (lambda name=name: name) for name in names}


def test_fastest_picks_the_quickest_candidate():
    candidates = _named("cublas", "cublaslt", "triton")
    assert fastest(candidates, _fake_time_s({"cublas": 35.4e-6, "cublaslt": 31.8e-6, "triton": 40e-6})) == "cublaslt"
    assert fastest(candidates, _fake_time_s({"cublas": 16.3e-6, "cublaslt": 17e-6, "triton": 15.9e-6})) == "triton"
    # a tie goes to the candidate listed first
    assert fastest(candidates, _fake_time_s({"cublas": 1e-6, "cublaslt": 1e-6, "triton": 2e-6})) == "cublas"


def test_fastest_treats_a_runtime_error_as_infinitely_slow():
    def unavailable():
        raise RuntimeError("Cannot set preferred backend to cuBLASLt")
    # listed first, so it would win a tie: it must rank behind any time at all
    candidates = {"cublaslt": unavailable, **_named("cublas")}
    assert fastest(candidates, _fake_time_s({"cublas": 1e3})) == "cublas"


class _Layer(torch.nn.Module):
    def __init__(self, n: int, k: int):
        super().__init__()
        Unquantized().create(self, n, k)
        self.weight.data.normal_()


def test_apply_takes_the_tuned_backend_only_at_a_tuned_shape_and_row_count(monkeypatch):
    ran = []
    monkeypatch.setattr(gemv, "gemv", lambda x, w: (ran.append("triton"), x @ w.t())[1])
    monkeypatch.setattr(gemv, "gemv_row", lambda x, w: (ran.append("triton_row"), x @ w.t())[1])
    monkeypatch.setattr(quant, "blas_linear", lambda library, x, w: (ran.append(library), x @ w.t())[1])
    scheme = Unquantized()
    tuned, other = _Layer(8, 16), _Layer(12, 16)
    scheme.backends = {(8, 16, 4): "cublaslt", (8, 16, 2): "triton", (8, 16, 64): "cublas", (8, 16, 1): "triton_row"}
    for rows, layer, path in [(4, tuned, "cublaslt"), (2, tuned, "triton"), (64, tuned, "cublas"),
                              (1, tuned, "triton_row"), (3, tuned, None), (1, other, None), (4, other, None)]:
        ran.clear()
        x = torch.randn(rows, 16)
        y = scheme.apply(layer, x)
        assert ran == ([path] if path else []), (rows, layer.weight.shape)
        torch.testing.assert_close(y, x @ layer.weight.t())


def test_apply_without_a_table_is_f_linear(monkeypatch):
    monkeypatch.setattr(quant, "blas_linear", lambda *a: pytest.fail("no table: no library switch"))
    layer = _Layer(8, 16)
    x = torch.randn(4, 16)
    torch.testing.assert_close(Unquantized().apply(layer, x), torch.nn.functional.linear(x, layer.weight))


def test_tune_without_row_counts_times_nothing_and_clears_the_table():
    scheme = Unquantized()
    scheme.backends = {(8, 16, 4): "cublaslt"}
    layer = _Layer(8, 16)
    layer.scheme = scheme
    assert scheme.tune(torch.nn.ModuleList([layer]), torch.float32, []) == {}
    assert scheme.backends == {}


def testblas_linear_restores_the_preferred_library():
    before = torch.backends.cuda.preferred_blas_library()
    x, w = torch.randn(2, 16), torch.randn(8, 16)
    try:
        y = quant.blas_linear("cublaslt", x, w)    # a CPU build cannot prefer cuBLASLt: RuntimeError
    except RuntimeError:
        y = None
    assert torch.backends.cuda.preferred_blas_library() == before
    if y is not None:
        torch.testing.assert_close(y, x @ w.t())


def test_tune_switch(monkeypatch):
    monkeypatch.delenv("PLAN_ENGINE_TUNE_LINEAR", raising=False)
    assert tune_linear_enabled()
    monkeypatch.setenv("PLAN_ENGINE_TUNE_LINEAR", "0")
    assert not tune_linear_enabled()
    monkeypatch.setenv("PLAN_ENGINE_TUNE_LINEAR", "off")
    with pytest.raises(ValueError, match="PLAN_ENGINE_TUNE_LINEAR='off': expected 0 or 1"):
        tune_linear_enabled()


def test_runner_on_cpu_tunes_nothing():
    from backends.engine.config import TINY, EngineConfig
    from backends.engine.model_runner import ModelRunner

    runner = ModelRunner(EngineConfig(model=TINY, device="cpu", num_kv_blocks=16))
    info = runner.kv_info()
    assert info["linear_backends"] is None
    assert quant.SCHEMES["none"].backends == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_tune_on_cuda_and_every_backend_captures_in_a_graph():
    """The real race on small shapes, then each backend forced at one row count and captured in a CUDA graph
    (the library switch happens at capture): every replay matches F.linear, and the preference is restored."""
    scheme = Unquantized()
    g = torch.Generator(device="cuda").manual_seed(0)
    layers = torch.nn.ModuleList([_Layer(256, 512), _Layer(1024, 256)]).cuda().to(torch.bfloat16)
    for layer in layers:
        layer.scheme = scheme
    report = scheme.tune(layers, torch.bfloat16, [1, 8, 64])
    assert set(report) == {"256x512", "1024x256"}
    for per_rows in report.values():
        assert set(per_rows) == {"1", "8", "64"}
        assert per_rows["64"] in quant.BLAS_LIBRARIES     # no GEMV above gemv.MAX_ROWS
        assert set(per_rows.values()) <= {*quant.BLAS_LIBRARIES, *quant.GEMV_KERNELS, *gemv.TMA_CONFIGS}
        assert per_rows["8"] != "triton_row"              # the row kernel takes one row only
    layer = layers[0]
    before = torch.backends.cuda.preferred_blas_library()
    tma = [(name, 8) for name in gemv.TMA_CONFIGS] if gemv.tma_wanted(torch.empty(8, 512, dtype=torch.bfloat16,
                                                                                device="cuda")) else []
    for backend, rows in [*((lib, 8) for lib in (*quant.BLAS_LIBRARIES, "triton")), ("triton_row", 1), *tma]:
        scheme.backends = {(256, 512, rows): backend}
        x = torch.randn(rows, 512, dtype=torch.bfloat16, device="cuda", generator=g)
        scheme.apply(layer, x)                              # warm-up outside capture (Triton JIT, handles)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y = scheme.apply(layer, x)
        x.copy_(torch.randn(rows, 512, dtype=torch.bfloat16, device="cuda", generator=g))
        graph.replay()
        torch.testing.assert_close(y, torch.nn.functional.linear(x, layer.weight), rtol=2e-2, atol=2e-2)
        assert torch.backends.cuda.preferred_blas_library() == before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_race_times_the_device_not_the_host():
    """A candidate with slow host work around a small kernel is timed at its kernel's device time, as the
    engine's graphs replay it: the host's share does not count (it decided the fp8 path before)."""
    import time

    x = torch.randn(64, 64, device="cuda")

    def host_heavy():
        time.sleep(2e-4)
        return x * 2

    assert quant._median_s(host_heavy) < 5e-5


def test_fastest_skips_a_triton_kernel_out_of_shared_memory():
    triton = pytest.importorskip("triton")

    def too_big():
        raise triton.OutOfResources(327680, 232448, "shared memory")
    assert fastest({"triton_tma_128x128s3": too_big, **_named("cublas")}, _fake_time_s({"cublas": 1.0})) == "cublas"


def test_norms_fold_only_where_the_folded_gemvs_beat_the_raced_linears_plus_two_norms(monkeypatch):
    """fused_norms.tune: per row count, the best folded GEMV per linear summed against the linear race's winners
    plus two norm kernels; the scheme's `fused` table and the model's fused rows follow the verdict."""
    from backends.engine import fused_norms
    from backends.engine.config import TINY
    from backends.engine.model import build_model

    model = build_model(TINY, 64, torch.float32, torch.device("cpu"))
    scheme = quant.SCHEMES["none"]
    shapes = {tuple(m.weight.shape) for m in model.modules() if getattr(m, "scheme", None) is scheme}
    monkeypatch.setattr(scheme, "backends", {(*s, r): "cublas" for s in shapes for r in (1, 8, 16, 32, 48)})
    monkeypatch.setattr(scheme, "fused", {})
    # unfolded: every linear 10 us (cuBLAS) and 2 us a norm; folded: 10.5 us at 1 row (wins by 4 - 2 = 2 us),
    # 11 us at 8 rows (4 x 1 us more, all the 4 us of norms saved: a tie keeps the norms)
    folded_us = {1: 10.5, 8: 11.0, 16: 10.5, 32: 12.0}

    rows_seen = []   # the rows of the race's latest input: the row count being raced

    def timed_cold(layer, calls):
        rows = rows_seen[-1]
        names = list(calls(layer))
        if names == ["cublas"]:
            return {"cublas": 10e-6}
        return {name: (folded_us[rows] if name == "triton" else 99) * 1e-6 for name in names}
    monkeypatch.setattr(quant, "timed_cold", timed_cold)
    monkeypatch.setattr(quant, "timed", lambda calls: {name: 2e-6 for name in calls})
    real_randn = torch.randn
    monkeypatch.setattr(torch, "randn", lambda rows, *a, **k: (rows_seen.append(rows), real_randn(rows, *a, **k))[1])
    report = fused_norms.tune(model, torch.float32, [1, 8, 16, 32, 48])
    # none above gemv.MAX_ROWS
    assert {r: v["folded"] for r, v in report.items()} == {"1": True, "8": False, "16": True, "32": False}
    assert report["1"]["folded_us"] == 42.0 and report["1"]["unfolded_us"] == 44.0
    assert model.fused_rows == {1, 16} and model.norm_parts is not None
    layer = model.model.layers[0]
    linears = (layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj)
    assert set(scheme.fused) == {(*m.weight.shape, r) for m in linears for r in (1, 16)}
    assert set(scheme.fused.values()) == {"triton"}
