"""Norms fused into the linear after them (fused.py): norm_linear following an injected choice table, the model
running through it with a new residual tensor each layer, the switch, and nothing tuned on CPU. The kernel is
checked in test_engine_kernels.py; the race and graph capture need CUDA (GPU-only tests at the end)."""
import pytest

torch = pytest.importorskip("torch")

from backends.engine import fused, gemv, kernels  # noqa: E402
from backends.engine.config import TINY, EngineConfig, SamplingParams  # noqa: E402
from backends.engine.engine import LLMEngine  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _reference(calls):
    """A stand-in for gemv.gemv_norm: the unfused chain in torch, recording each call, with a new residual."""
    def gemv_norm(h, residual, norm_weight, eps, weight, cfg, gated=False):
        calls.append((tuple(weight.shape), h.shape[0], gated))
        x, new_residual = kernels.rms_norm_torch(h, norm_weight, eps, residual.clone())
        y = x @ weight.t()
        return (kernels.silu_and_mul_torch(y) if gated else y), new_residual
    return gemv_norm


@pytest.fixture
def choices(monkeypatch):
    table = {}
    monkeypatch.setattr(fused, "_choices", table)
    return table


def test_norm_linear_fuses_only_a_chosen_shape_row_count_and_kind(monkeypatch, choices):
    from backends.engine.linear import Linear
    from backends.engine.model import RMSNorm

    calls = []
    monkeypatch.setattr(gemv, "gemv_norm", _reference(calls))
    norm, linear = RMSNorm(16, 1e-6), Linear(16, [8, 8])
    norm.weight.data.uniform_(0.5, 1.5)
    linear.weight.data.normal_()
    choices[(16, 16, 2, True)] = {"BLOCK_N": 16, "BLOCK_K": 16}
    for rows, gated, fuses in [(2, True, True), (2, False, False), (3, True, False)]:
        calls.clear()
        h, res = torch.randn(rows, 16), torch.randn(rows, 16)
        x, want_res = kernels.rms_norm_torch(h, norm.weight, 1e-6, res.clone())
        want = x @ linear.weight.t()
        want = kernels.silu_and_mul_torch(want) if gated else want
        y, new_res = fused.norm_linear(norm, linear, h, res.clone(), gated)
        assert calls == ([((16, 16), rows, gated)] if fuses else []), (rows, gated)
        torch.testing.assert_close(y, want)
        torch.testing.assert_close(new_res, want_res)


def test_engine_through_fused_norms_gives_the_unfused_tokens(monkeypatch, choices):
    """Every decode row count fused on both sites (qkv, gate_up + SiLU): the layers hand the new residual on."""
    prompts = [list(range(1 + i, 30 + 5 * i)) for i in range(3)]
    params = SamplingParams(max_tokens=6, ignore_eos=True)
    cfg = dict(model=TINY, device="cpu", dtype="fp32", num_kv_blocks=32, max_model_len=256, cuda_graphs=False)
    expected = [LLMEngine(EngineConfig(**cfg)).generate(p, params) for p in (prompts, prompts[:1])]
    calls = []
    monkeypatch.setattr(gemv, "gemv_norm", _reference(calls))
    engine = LLMEngine(EngineConfig(**cfg))
    q, kv = TINY.num_attention_heads * TINY.head_dim, TINY.num_kv_heads * TINY.head_dim
    for rows in (1, 2, 3):
        choices[(q + 2 * kv, TINY.hidden_size, rows, False)] = {}
        choices[(2 * TINY.intermediate_size, TINY.hidden_size, rows, True)] = {}
    assert [engine.generate(p, params) for p in (prompts, prompts[:1])] == expected
    assert {gated for _, _, gated in calls} == {False, True} and {rows for _, rows, _ in calls} == {1, 3}


def test_tune_without_rows_or_switched_off_chooses_nothing(monkeypatch, choices):
    choices[(1, 2, 3, False)] = {}
    assert fused.tune(torch.nn.Module(), torch.bfloat16, []) == {} and choices == {}
    monkeypatch.setenv("PLAN_ENGINE_FUSE_NORM", "0")
    choices[(1, 2, 3, False)] = {}
    assert fused.tune(torch.nn.Module(), torch.bfloat16, [1, 8]) == {} and choices == {}
    monkeypatch.setenv("PLAN_ENGINE_FUSE_NORM", "yes")
    with pytest.raises(ValueError, match="PLAN_ENGINE_FUSE_NORM='yes': expected 0 or 1"):
        fused.tune(torch.nn.Module(), torch.bfloat16, [1])


def test_runner_on_cpu_fuses_nothing():
    from backends.engine.model_runner import ModelRunner

    info = ModelRunner(EngineConfig(model=TINY, device="cpu", num_kv_blocks=16)).kv_info()
    assert info["fused_norms"] is None and fused._choices == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_tune_on_cuda_then_each_tile_captured_in_a_graph():
    """The real race on a small model, then every tile size forced at 1 and 8 rows and captured in a CUDA
    graph: each replay matches the unfused chain, and the residual passed in is left as it was."""
    from backends.engine.model import build_model
    from backends.engine.quant import SCHEMES

    spec = TINY.model_copy(update=dict(hidden_size=512, intermediate_size=1024, num_attention_heads=8,
                                       num_kv_heads=2))
    model = build_model(spec, 256, torch.bfloat16, torch.device("cuda"))
    model.init_dummy(0)
    SCHEMES["none"].tune(model, torch.bfloat16, [1, 8])
    try:
        report = fused.tune(model, torch.bfloat16, [1, 8, 64])
        qkv_rows = (spec.num_attention_heads + 2 * spec.num_kv_heads) * spec.head_dim
        assert set(report) == {f"{qkv_rows}x512", "2048x512+silu"}
        assert all(set(per_rows) == {"1", "8"} for per_rows in report.values())     # none above 16 rows
        layer = model.model.layers[1]
        g = torch.Generator(device="cuda").manual_seed(0)
        for norm, linear, gated in [(layer.input_layernorm, layer.self_attn.qkv_proj, False),
                                    (layer.post_attention_layernorm, layer.mlp.gate_up_proj, True)]:
            norm.weight.data.uniform_(0.5, 1.5, generator=g)
            n = linear.weight.shape[0] // (2 if gated else 1)
            for rows in (1, 8):
                for cfg in gemv.norm_configs(n, 512, torch.device("cuda")):
                    h, res = (torch.randn(rows, 512, dtype=torch.bfloat16, device="cuda", generator=g)
                              for _ in range(2))
                    gemv.gemv_norm(h, res, norm.weight, norm.eps, linear.weight, cfg, gated)    # JIT outside capture
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        y, new_res = gemv.gemv_norm(h, res, norm.weight, norm.eps, linear.weight, cfg, gated)
                    h.copy_(torch.randn(rows, 512, dtype=torch.bfloat16, device="cuda", generator=g))
                    kept = res.clone()
                    graph.replay()
                    x, want_res = kernels.rms_norm_triton(h, norm.weight, norm.eps, res.clone())
                    want = linear(x)
                    want = kernels.silu_and_mul_triton(want) if gated else want
                    torch.testing.assert_close(y, want, rtol=2e-2, atol=2e-2)
                    assert torch.equal(new_res, want_res) and torch.equal(res, kept)
    finally:
        fused.tune(model, torch.bfloat16, [])
        SCHEMES["none"].tune(model, torch.bfloat16, [])
