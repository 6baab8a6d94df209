"""The engine's decoder against Hugging Face transformers, same weights, fp32 on CPU."""
import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from backends.engine.attention import AttentionMetadata
from backends.engine.config import EngineConfig, SamplingParams, resolve_model, spec_from_hf_config
from backends.engine.engine import LLMEngine

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=128, vocab_size=128, max_position_embeddings=512)
CONFIGS = {
    # original_max_position_embeddings is small so the llama3 scaling changes positions we test
    "llama3": lambda: transformers.LlamaConfig(**SMALL, rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32}),
    "qwen2": lambda: transformers.Qwen2Config(**SMALL),
    "qwen3": lambda: transformers.Qwen3Config(**SMALL, head_dim=16),
}
CLASSES = {"llama3": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}


pytestmark = pytest.mark.usefixtures("one_thread")


def hf_model(kind: str):
    torch.manual_seed(0)
    cfg = CONFIGS[kind]()
    model = getattr(transformers, CLASSES[kind])(cfg).eval()
    with torch.no_grad():  # larger than HF's init so that differences would show in the logits
        for name, p in model.named_parameters():
            p.normal_(0, 0.25) if "norm" not in name else p.uniform_(0.5, 1.5)
    return model


def engine_for(hf, **kw) -> LLMEngine:
    spec = spec_from_hf_config(hf.config.to_dict())
    cfg = dict(model=spec, device="cpu", dtype="fp32", num_kv_blocks=64, max_model_len=512)
    engine = LLMEngine(EngineConfig(**{**cfg, **kw}))
    engine.runner.model.load_weights(hf.state_dict().items())
    return engine


def record_logits(engine: LLMEngine) -> dict:
    """Wraps the sampler: request id -> logits of each sampled position, in order."""
    seen: dict[str, list] = {}
    sample = engine.runner._sample

    def wrapped(logits, temperatures, seqs):
        for row, seq in zip(logits, seqs):
            seen.setdefault(seq.request_id, []).append(row.clone())
        return sample(logits, temperatures, seqs)
    engine.runner._sample = wrapped
    return seen


PROMPT_LENS = (5, 40, 17, 70, 1)


def prompts(vocab: int):
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in PROMPT_LENS]


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_prefill_logits_match(kind):
    hf = hf_model(kind)
    engine = engine_for(hf)
    ids = torch.tensor(prompts(hf.config.vocab_size)[3])
    n = len(ids)
    meta = AttentionMetadata(slot_mapping=torch.arange(n), num_prefill_tokens=n, prefill_seqs=[(0, n, n)],
                             prefill_block_tables=[None])
    with torch.inference_mode():
        logits = engine.runner.model.compute_logits(engine.runner.model(ids, torch.arange(n), meta))
        ref = hf(ids[None]).logits[0]
    torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_paged_decode_logits_and_greedy_match(kind):
    """Concurrent requests, chunked prefill (small token budget), decode through the paged cache."""
    hf = hf_model(kind)
    engine = engine_for(hf, max_num_batched_tokens=24, max_num_seqs=4)
    seen = record_logits(engine)
    ps = prompts(hf.config.vocab_size)
    outs = engine.generate(ps, SamplingParams(max_tokens=12, ignore_eos=True))
    for i, (p, out) in enumerate(zip(ps, outs)):
        full = torch.tensor([p + out])
        with torch.inference_mode():
            ref = hf(full).logits[0, len(p) - 1:-1]
        torch.testing.assert_close(torch.stack(seen[f"req-{i}"]), ref, rtol=1e-4, atol=1e-4)
        greedy = hf.generate(torch.tensor([p]), max_new_tokens=12, min_new_tokens=12, do_sample=False)
        assert out == greedy[0, len(p):].tolist()


def test_chunked_prefill_equals_unchunked():
    hf = hf_model("llama3")
    ps = prompts(hf.config.vocab_size)
    logits = []
    for budget in (512, 7):
        engine = engine_for(hf, max_num_batched_tokens=budget)
        seen = record_logits(engine)
        engine.generate(ps, SamplingParams(max_tokens=3, ignore_eos=True))
        logits.append(torch.stack([x for i in range(len(ps)) for x in seen[f"req-{i}"]]))
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)


def test_safetensors_folder(tmp_path):
    """A saved Hugging Face folder loads by path (config.json + safetensors) and generates the same tokens."""
    hf = hf_model("qwen3")
    hf.save_pretrained(tmp_path)
    spec, folder, eos = resolve_model(str(tmp_path))
    assert spec.qk_norm and spec.architecture == "qwen3" and folder == tmp_path
    engine = LLMEngine(EngineConfig(model=spec, model_path=folder, eos_token_ids=eos, load_format="safetensors",
                                    device="cpu", dtype="fp32", num_kv_blocks=32, max_model_len=256))
    p = prompts(hf.config.vocab_size)[1]
    out = engine.generate([p], SamplingParams(max_tokens=8, ignore_eos=True))[0]
    ref = hf.generate(torch.tensor([p]), max_new_tokens=8, min_new_tokens=8, do_sample=False)[0, len(p):]
    assert out == ref.tolist()


def test_hf_config_rope_formats(tmp_path):
    """Old (rope_theta + rope_scaling) and new (rope_parameters) config.json give the same spec."""
    new = CONFIGS["llama3"]().to_dict()
    old = {k: v for k, v in new.items() if k != "rope_parameters"}
    old["rope_theta"] = new["rope_parameters"]["rope_theta"]
    old["rope_scaling"] = {k: v for k, v in new["rope_parameters"].items() if k != "rope_theta"}
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert resolve_model(str(tmp_path))[0].model_dump(exclude={"name", "source"}) == \
        spec_from_hf_config(new).model_dump(exclude={"name", "source"})
