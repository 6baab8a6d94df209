"""The engine's Triton kernels against their torch reference paths.

Runs on a GPU, or on CPU under Triton's interpreter: `TRITON_INTERPRET=1 pytest tests/test_engine_kernels.py`
(needs the `triton` package; skipped otherwise).
"""
import functools
import os

import pytest

torch = pytest.importorskip("torch")
triton = pytest.importorskip("triton")

from backends.engine import attention, kernels

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# fp32 under the interpreter is exact; on a GPU, test the bf16 the engine runs (fp32 tl.dot would be tf32)
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32
TOL = dict(rtol=2e-2, atol=2e-2) if DEVICE == "cuda" else dict(rtol=1e-4, atol=1e-4)
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU: set TRITON_INTERPRET=1 to run the Triton kernels on CPU", allow_module_level=True)
if DEVICE == "cpu":
    import numpy
    import triton.language as tl
    from triton.runtime import interpreter as _interp

    _patch_lang_tensor = _interp._patch_lang_tensor

    def _patch_with_numpy2_index(tensor, scope):
        # The interpreter's scalars are 1-element arrays, which NumPy 2 will not int(): dynamic loop bounds.
        _patch_lang_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    _interp._patch_lang_tensor = _patch_with_numpy2_index

    _create_dot = _interp.InterpreterBuilder.create_dot

    def _create_dot_bf16(self, a, b, d, *args):
        # The interpreter keeps bf16 as uint16 bits and would matmul those integers: widen to fp32 first.
        def widen(h):
            if h.dtype.scalar != tl.bfloat16:
                return h
            return _interp.TensorHandle(_interp._convert_float(h.data, tl.bfloat16, tl.float32, None)
                                        .view(numpy.float32), tl.float32)
        return _create_dot(self, widen(a), widen(b), d, *args)

    _interp.InterpreterBuilder.create_dot = _create_dot_bf16


pytestmark = pytest.mark.usefixtures("one_thread")


def test_rms_norm_with_residual():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 96, generator=g).to(DEVICE, DTYPE)
    res = torch.randn(5, 96, generator=g).to(DEVICE, DTYPE)
    w = torch.rand(96, generator=g).to(DEVICE, DTYPE)
    ref_out, ref_res = kernels.rms_norm_torch(x, w, 1e-6, res.clone())
    out, new_res = kernels.rms_norm_triton(x, w, 1e-6, res.clone())
    torch.testing.assert_close(out, ref_out, **TOL)
    torch.testing.assert_close(new_res, ref_res, **TOL)
    torch.testing.assert_close(kernels.rms_norm_triton(x, w, 1e-6), kernels.rms_norm_torch(x, w, 1e-6),
                               **TOL)


def test_silu_and_mul():
    x = torch.randn(3, 2 * 1500, generator=torch.Generator().manual_seed(1)).to(DEVICE, DTYPE)
    torch.testing.assert_close(kernels.silu_and_mul_triton(x), kernels.silu_and_mul_torch(x), **TOL)


@pytest.mark.parametrize("qk_norm", [False, True])
def test_qk_norm_rope_store(qk_norm):
    g = torch.Generator().manual_seed(2)
    T, H, KVH, D, BS, NB = 6, 4, 2, 32, 16, 4
    qkv = torch.randn(T, (H + 2 * KVH) * D, generator=g).to(DEVICE, DTYPE)
    positions = torch.tensor([0, 1, 7, 30, 31, 63], device=DEVICE)
    slots = torch.tensor([3, 17, 40, 41, 0, 63], device=DEVICE)
    cos_sin = kernels.rope_cos_sin(D, 64, 10000.0, None, DEVICE)   # fp32 as in the model
    qw = torch.rand(D, generator=g).to(DEVICE, DTYPE) if qk_norm else None
    kw = torch.rand(D, generator=g).to(DEVICE, DTYPE) if qk_norm else None
    results = []
    for fn in (kernels.qk_norm_rope_store_torch, kernels.qk_norm_rope_store_triton):
        t = qkv.clone()
        q, k, v = t[:, :H * D].view(T, H, D), t[:, H * D:(H + KVH) * D].view(T, KVH, D), t[:, (H + KVH) * D:].view(T, KVH, D)
        kc, vc = (torch.zeros(NB, BS, KVH, D, device=DEVICE, dtype=DTYPE) for _ in range(2))
        fn(q, k, v, positions, cos_sin, kc, vc, slots, qw, kw, 1e-6)
        results.append((t, kc, vc))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("num_splits", [1, 2, 4])
@pytest.mark.parametrize("H,KVH", [(8, 2), (4, 4)])
@pytest.mark.parametrize("D", [32, 128])          # 128- and 64-token context tiles
@pytest.mark.parametrize("layout", ["token", "head"])
@pytest.mark.parametrize("tail", [16, 128])       # the tokens past the last whole tile in 16-token tiles, or in one
def test_decode_attention(num_splits, H, KVH, D, layout, tail):
    """Over either cache layout: [blocks, block_size, kv_heads, D], or each head's block contiguous (a strided view)."""
    g = torch.Generator().manual_seed(3)
    BS, NB = 16, 80
    ctx = torch.tensor([1, 17, 100, 300], dtype=torch.int32, device=DEVICE)
    B = len(ctx)
    shape = (NB, BS, KVH, D) if layout == "token" else (NB, KVH, BS, D)
    k_cache, v_cache = (torch.randn(shape, generator=g).to(DEVICE, DTYPE) for _ in range(2))
    if layout == "head":
        k_cache, v_cache = k_cache.transpose(1, 2), v_cache.transpose(1, 2)
    width = 20
    tables = torch.randperm(NB, generator=g)[:B * width].view(B, width).to(DEVICE, torch.int32)
    q = torch.randn(B, H, D, generator=g).to(DEVICE, DTYPE)
    ref = attention.decode_attention_torch(q, k_cache, v_cache, tables, ctx, D ** -0.5)
    out = attention.decode_attention_triton(q, k_cache, v_cache, tables, ctx, D ** -0.5, num_splits, tail=tail)
    torch.testing.assert_close(out, ref, **TOL)


@pytest.mark.skipif(DEVICE != "cuda", reason="register counts of the compiled kernel")
@pytest.mark.parametrize("num_splits", [1, 2, 16])
def test_decode_kernel_fits_its_programs_per_sm(num_splits):
    """As the engine calls it (Llama-3.1-8B heads, int64 context lengths, bf16 output standing in for the partials at
    one split), the decode kernel leaves room for DECODE_PROGRAMS_PER_SM programs an SM: at 166 registers a
    program (int64 token indices) batch 64-256 decode steps ran 6-11% slower on an H200."""
    B, H, KVH, D, BS = 64, 32, 8, 128, 16
    ctx = torch.full((B,), 1025, dtype=torch.long, device=DEVICE)
    k_cache, v_cache = (torch.randn(B * 65, BS, KVH, D, dtype=DTYPE, device=DEVICE) for _ in range(2))
    tables = torch.arange(B * 65, dtype=torch.int32, device=DEVICE).view(B, 65)
    q = torch.randn(B, H, D, dtype=DTYPE, device=DEVICE)
    attention.decode_attention_triton(q, k_cache, v_cache, tables, ctx, D ** -0.5, num_splits)
    props = torch.cuda.get_device_properties(DEVICE)
    for kernel in attention._decode_kernel.device_caches[torch.cuda.current_device()][0].values():
        kernel._init_handles()
        threads = 32 * kernel.metadata.num_warps
        assert kernel.n_spills == 0
        assert kernel.n_regs * threads * attention.DECODE_PROGRAMS_PER_SM <= getattr(props, "regs_per_multiprocessor", 65536)


@pytest.mark.parametrize("count,first,splits", [(3, 5, 4), (1, 0, 2), (6, 6, 1), (0, 4, 1)])
def test_decode_attention_rows_counted_on_the_device(count, first, splits):
    """The whole-forward graphs' decode: count, first row and split count read from the device, one grid for
    any count. The named rows equal decode_attention's; every other row of the step is left as it was."""
    g = torch.Generator().manual_seed(5)
    H, KVH, D, BS, NB, T, most, width = 8, 2, 64, 16, 60, 12, 6, 8
    k_cache = torch.randn(NB, BS, KVH, D, generator=g).to(DEVICE, DTYPE)
    v_cache = torch.randn(NB, BS, KVH, D, generator=g).to(DEVICE, DTYPE)
    tables = torch.randint(0, NB, (most, width), generator=g).to(DEVICE, torch.int32)
    ctx = torch.zeros(T, dtype=torch.long)
    ctx[:count] = torch.randint(1, width * BS, (count,), generator=g)
    ctx = ctx.to(DEVICE)
    by_count = [1] + [splits] * most
    dec = attention.DecodeRows(
        rows=torch.tensor([count, first], device=DEVICE), splits=torch.tensor(by_count, dtype=torch.int32, device=DEVICE),
        max_splits=max(by_count), num_programs=max(n * KVH * s for n, s in enumerate(by_count)),
        part_o=torch.empty(most, H, max(by_count), D, device=DEVICE), part_ml=torch.empty(most, H, max(by_count), 2,
                                                                                          device=DEVICE))
    q = torch.randn(T, H, D, generator=g).to(DEVICE, DTYPE)
    out = torch.full((T, H, D), 7.0, dtype=DTYPE, device=DEVICE)
    attention.decode_attention_rows(q, k_cache, v_cache, tables, ctx, D ** -0.5, dec, out)
    rows = slice(first, first + count)
    ref = attention.decode_attention_torch(q[rows], k_cache, v_cache, tables[:count], ctx[:count], D ** -0.5)
    torch.testing.assert_close(out[rows], ref, **TOL)
    assert (torch.cat([out[:first], out[first + count:]]) == 7.0).all()


@pytest.mark.skipif(DEVICE == "cuda", reason="exact fp32 only under the interpreter (tf32 dots on a GPU)")
def test_engine_through_triton_kernels(monkeypatch):
    """Mixed prefill/decode steps with every Triton kernel and split-K decode give the torch path's tokens."""
    from backends.engine import model_runner
    from backends.engine.config import TINY, EngineConfig, SamplingParams
    from backends.engine.engine import LLMEngine

    prompts = [list(range(1 + i, 40 + 7 * i)) for i in range(3)]
    params = SamplingParams(max_tokens=6, ignore_eos=True)
    cfg = dict(model=TINY, device=DEVICE, dtype="fp32", num_kv_blocks=32, max_num_batched_tokens=48,
               max_model_len=256, cuda_graphs=False)
    expected = LLMEngine(EngineConfig(**cfg)).generate(prompts, params)
    for module in (kernels, attention):
        monkeypatch.setattr(module, "use_triton", lambda x: True)
    monkeypatch.setattr(model_runner, "decode_num_splits", lambda *a: 4)
    assert LLMEngine(EngineConfig(**cfg)).generate(prompts, params) == expected


@pytest.mark.skipif(DEVICE == "cuda", reason="exact fp32 only under the interpreter (tf32 dots on a GPU)")
def test_engine_with_norms_folded_into_the_gemvs(monkeypatch):
    """Steps of 1-16 rows with each layer's RMSNorms folded into its GEMVs (fused_norms) give the torch path's
    tokens; the folded path really ran."""
    from backends.engine import quant
    from backends.engine.config import TINY, EngineConfig, SamplingParams
    from backends.engine.engine import LLMEngine

    prompts = [list(range(1 + i, 12 + 3 * i)) for i in range(3)]
    params = [SamplingParams(max_tokens=3 + 2 * i, ignore_eos=True) for i in range(3)]
    cfg = dict(model=TINY, device=DEVICE, dtype="fp32", num_kv_blocks=32, max_num_batched_tokens=64,
               max_model_len=256, cuda_graphs=False)
    expected = LLMEngine(EngineConfig(**cfg)).generate(prompts, params)
    for module in (kernels, attention, quant):
        monkeypatch.setattr(module, "use_triton", lambda x: True)
    engine = LLMEngine(EngineConfig(**cfg))
    model = engine.runner.model
    shapes = {tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Linear) or hasattr(m, "scheme")}
    monkeypatch.setattr(quant.SCHEMES["none"], "fused", {(*s, r): "triton" for s in shapes for r in range(1, 17)})
    model.fold_norms(range(1, 17))
    folded = []
    apply_fused = quant.Unquantized.apply_fused
    monkeypatch.setattr(quant.Unquantized, "apply_fused",
                        lambda self, *a: (folded.append(a[1].shape[0]), apply_fused(self, *a))[1])
    assert engine.generate(prompts, params) == expected
    assert set(folded) == {1, 2, 3}      # decode steps of 3, 2 and 1 sequences (the prompts prefill together)
    model.fold_norms(())


@pytest.mark.parametrize("M", [1, 3, 8, 16, 24, 32])
@pytest.mark.parametrize("N,K", [(64, 128), (100, 200), (257, 1000), (4096, 512)])
def test_gemv_against_matmul(M, N, K):
    """The skinny Triton GEMM (bf16 in/out, fp32 accumulate), incl. N and K off the block sizes."""
    from backends.engine import gemv
    g = torch.Generator().manual_seed(M * 7 + N + K)
    x = torch.randn(M, K, generator=g).to(DEVICE, torch.bfloat16)
    w = (torch.randn(N, K, generator=g) * 0.02).to(DEVICE, torch.bfloat16)
    ref = x.float() @ w.float().t()
    # one row: also the CUDA-core row kernel, which the linear tuning races for bf16 weights too
    # and the TMA-fed GEMV at each tile the race tries (Hopper on)
    tma = [gemv.gemv_tma(x, w, cfg) for cfg in gemv.TMA_CONFIGS.values()
           if K % cfg["BLOCK_K"] == 0] if gemv.tma_wanted(x) else []
    for out in [gemv.gemv(x, w)] + ([gemv.gemv_row(x, w)] if M == 1 else []) + tma:
        assert out.shape == (M, N) and out.dtype == torch.bfloat16
        assert ((out.float() - ref).norm() / ref.norm()).item() < 1e-2
        assert ((out.float() - ref).abs().amax() / ref.abs().amax()).item() < 1e-2


@pytest.mark.parametrize("M", [1, 4, 16])
@pytest.mark.parametrize("N,K", [(64, 128), (100, 200), (257, 1000)])
def test_fp8_gemv_against_dequantized_matmul(M, N, K):
    """The weight-only fp8 path: e4m3 rows with per-row scales, bf16 x, against dequantize-then-matmul."""
    from backends.engine import gemv
    from backends.engine.quant import FP8, quantize_rows
    g = torch.Generator().manual_seed(M * 11 + N + K)
    x = torch.randn(M, K, generator=g).to(DEVICE, torch.bfloat16)
    q, scale = quantize_rows(torch.randn(N, K, generator=g) * 0.02, FP8)
    q, scale = q.to(DEVICE), scale.to(DEVICE)
    out = gemv.gemv(x, q, scale=scale)
    ref = x.float() @ (q.float() * scale[:, None]).t()
    assert out.shape == (M, N) and out.dtype == torch.bfloat16
    assert ((out.float() - ref).norm() / ref.norm()).item() < 2e-2
    assert ((out.float() - ref).abs().amax() / ref.abs().amax()).item() < 2e-2


@pytest.mark.parametrize("M", [1, 5, 16, 32])
@pytest.mark.parametrize("hidden,inter", [(256, 384), (200, 130)])
def test_gemvs_with_the_norm_between_them(M, hidden, inter):
    """A residual add (o_proj/down: add_to) then RMSNorm then a linear (gate_up/qkv: norm), the norm folded into
    the two GEMVs, against the add + norm kernel + matmul it replaces; with the TMA-fed GEMV too (Hopper on)."""
    from backends.engine import gemv
    g = torch.Generator().manual_seed(M + hidden)
    a = torch.randn(M, inter, generator=g).to(DEVICE, DTYPE)
    w1 = (torch.randn(hidden, inter, generator=g) * 0.05).to(DEVICE, DTYPE)
    w2 = (torch.randn(3 * hidden, hidden, generator=g) * 0.05).to(DEVICE, DTYPE)
    norm_w = (1 + 0.1 * torch.randn(hidden, generator=g)).to(DEVICE, DTYPE)
    residual = torch.randn(M, hidden, generator=g).to(DEVICE, DTYPE)
    x, ref_h = kernels.rms_norm_torch(a @ w1.t(), norm_w, 1e-5, residual.clone())
    ref = x.float() @ w2.float().t()
    cfgs = [None] + ([cfg for cfg in gemv.TMA_CONFIGS.values() if hidden % cfg["BLOCK_K"] == 0
                      and inter % cfg["BLOCK_K"] == 0] if gemv.tma_wanted(a) else [])
    for cfg in cfgs:
        parts = gemv.NormParts(hidden, a.device)
        h = residual.clone()
        run = functools.partial(gemv.gemv, cfg=cfg) if cfg is None else functools.partial(gemv.gemv_tma, cfg=cfg)
        assert run(a, w1, add_to=gemv.AddTo(h, parts)) is h
        torch.testing.assert_close(h, ref_h, **TOL)
        torch.testing.assert_close(parts.sums[:parts.count, :M].sum(0), h.float().pow(2).sum(1), **TOL)
        out = run(h, w2, norm=gemv.Norm(norm_w, 1e-5, parts))
        assert out.shape == (M, 3 * hidden) and ((out.float() - ref).norm() / ref.norm()).item() < 1e-2


def test_copy_into():
    g = torch.Generator().manual_seed(3)
    for n in (1, 2047, 2048, 5000, 5008):       # the kernel takes multiples of 16, torch the rest
        src = torch.randn(n, generator=g).to(DEVICE, DTYPE)
        dst = torch.full_like(src, float("nan"))
        kernels.copy_into(dst, src)
        assert torch.equal(dst, src)
