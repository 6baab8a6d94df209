"""fp8 / int8 weights (and the fp8 KV cache) against full precision on a tiny model, CPU."""
import pytest

torch = pytest.importorskip("torch")

from backends.engine.attention import AttentionMetadata
from backends.engine.config import TINY, EngineConfig, EngineError
from backends.engine.engine import LLMEngine
from backends.engine.quant import FP8, quantize_rows, quantize_tokens_fp8_torch

# Bounds on the relative L2 error of the logits: e4m3 has a 3-bit mantissa (2^-4 relative rounding of each
# weight and activation), int8 per-channel ~1/254 of each row's range; errors average out over the GEMMs.
BOUNDS = {"fp8": 0.08, "int8": 0.02}


pytestmark = pytest.mark.usefixtures("one_thread")


def engine(**kw) -> LLMEngine:
    return LLMEngine(EngineConfig(model=TINY, device="cpu", dtype="fp32", num_kv_blocks=32, max_model_len=256, **kw))


def logits(e: LLMEngine, prompt: list[int]) -> torch.Tensor:
    n = len(prompt)
    meta = AttentionMetadata(slot_mapping=torch.arange(n), num_prefill_tokens=n, prefill_seqs=[(0, n, n)],
                             prefill_block_tables=[None])
    with torch.no_grad():
        m = e.runner.model
        return m.compute_logits(m(torch.tensor(prompt), torch.arange(n), meta))


def copy_full_precision_weights(src: LLMEngine, dst: LLMEngine) -> None:
    """Loads src's (unquantized) weights into dst through the checkpoint path, so dst quantizes them."""
    dst.runner.model.load_weights(src.runner.model.state_dict().items())


@pytest.mark.parametrize("kind", ["fp8", "int8"])
def test_quantized_logits_close_to_full_precision(kind):
    ref, q = engine(), engine(weight_dtype=kind)
    copy_full_precision_weights(ref, q)
    assert q.runner.model.model.layers[0].mlp.down_proj.weight.dtype == (FP8 if kind == "fp8" else torch.int8)
    assert q.runner.weights_bytes < ref.runner.weights_bytes
    prompt = list(range(1, 50))
    a, b = logits(ref, prompt), logits(q, prompt)
    err = ((b - a).norm() / a.norm()).item()
    print(f"{kind}: relative logit error {err:.4f}")
    assert 0 < err < BOUNDS[kind]


@pytest.mark.parametrize("kind", ["fp8", "int8"])
def test_random_weights_are_quantized_too(kind):
    e = engine(weight_dtype=kind)
    out = e.generate([[1, 2, 3]])[0]
    assert len(out) == 16
    assert e.runner.model.model.layers[1].self_attn.qkv_proj.weight_scale.abs().min() > 0


def test_row_quantization_round_trip():
    w = torch.randn(32, 64)
    for qdtype, tol in ((FP8, 0.07), (torch.int8, 0.01)):
        q, s = quantize_rows(w, qdtype)
        assert ((q.float() * s[:, None] - w).norm() / w.norm()) < tol
    q, s = quantize_tokens_fp8_torch(w)
    assert q.dtype == FP8 and s.shape == (32, 1)
    assert ((q.float() * s - w).norm() / w.norm()) < 0.07


def test_bad_weight_dtype_is_rejected():
    with pytest.raises(EngineError, match="weight_dtype"):
        EngineConfig(model=TINY, device="cpu", weight_dtype="int4")


def test_fp8_kv_cache_greedy_close_to_full_precision():
    ref, q = engine(), engine(kv_dtype="fp8")
    copy_full_precision_weights(ref, q)
    assert q.runner.k_cache.dtype == FP8 and q.runner.kv_bytes_per_token() * 4 == ref.runner.kv_bytes_per_token()
    prompts = [list(range(1, 40)), [7, 8, 9]]
    a, b = ref.generate(prompts), q.generate(prompts)
    # Decode reads the fp8 cache; with random weights a near tie may flip late, but not the first tokens.
    assert [x[:4] for x in a] == [x[:4] for x in b]
    # A second chunk of a prompt attends to its fp8-cached prefix.
    chunked = engine(kv_dtype="fp8", max_num_batched_tokens=16)
    copy_full_precision_weights(ref, chunked)
    assert chunked.generate(prompts[:1])[0][:4] == a[0][:4]
