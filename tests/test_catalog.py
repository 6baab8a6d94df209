"""Model and GPU catalogs: parameter counts against published figures, lookups, HF configs, profiles."""
import json

import pytest
import yaml

from planner import catalog
from planner.errors import UsageError
from planner.params import param_counts

# Total parameters as published (model card, paper or the HF page's checkpoint count); see each yaml's
# `source` for which. DeepSeek-V3 is 671B without the 14B multi-token-prediction module (685B on HF).
PUBLISHED_PARAMS = {
    "Llama-2-7B": 6.74e9,
    "Llama-2-13B": 13.0e9,
    "Llama-2-70B": 69.0e9,
    "Llama-3.1-8B": 8.03e9,
    "Llama-3.1-70B": 70.6e9,
    "Llama-3.1-405B": 405e9,
    "Llama-3.2-1B": 1.23e9,
    "Llama-3.2-3B": 3.21e9,
    "Mistral-7B": 7.25e9,
    "Mixtral-8x7B": 46.7e9,
    "Mixtral-8x22B": 141e9,
    "Qwen2.5-7B": 7.61e9,
    "Qwen2.5-14B": 14.7e9,
    "Qwen2.5-32B": 32.5e9,
    "Qwen2.5-72B": 72.7e9,
    "Qwen3-8B": 8.2e9,
    "Qwen3-32B": 32.8e9,
    "Qwen3-30B-A3B": 30.5e9,
    "Qwen3-235B-A22B": 235e9,
    "DeepSeek-V3": 671e9,
    "Gemma-2-9B": 9.24e9,
    "Gemma-2-27B": 27.2e9,
}

# Parameters used per token, as published for the MoE models.
PUBLISHED_ACTIVE = {
    "Mixtral-8x7B": 12.9e9,
    "Mixtral-8x22B": 39e9,
    "Qwen3-30B-A3B": 3.3e9,
    "Qwen3-235B-A22B": 22e9,
    "DeepSeek-V3": 37e9,
}

ALIASES = {
    "llama-70b": "Llama-3.1-70B", "llama-8b": "Llama-3.1-8B", "llama-405b": "Llama-3.1-405B",
    "llama-1b": "Llama-3.2-1B", "llama-3b": "Llama-3.2-3B", "llama2-7b": "Llama-2-7B",
    "llama2-13b": "Llama-2-13B", "llama2-70b": "Llama-2-70B", "mistral-7b": "Mistral-7B",
    "mixtral-8x7b": "Mixtral-8x7B", "mixtral-8x22b": "Mixtral-8x22B", "qwen2.5-7b": "Qwen2.5-7B",
    "qwen2.5-72b": "Qwen2.5-72B", "qwen3-8b": "Qwen3-8B", "qwen3-30b-a3b": "Qwen3-30B-A3B",
    "qwen3-235b-a22b": "Qwen3-235B-A22B", "deepseek-v3": "DeepSeek-V3", "gemma2-9b": "Gemma-2-9B",
    "gemma2-27b": "Gemma-2-27B", "LLAMA-70B": "Llama-3.1-70B", "llama-3.1-70b": "Llama-3.1-70B",
}

GPU_ALIASES = {
    "h100": "H100-SXM", "h200": "H200", "a100": "A100-80GB-SXM", "b200": "B200", "l40s": "L40S", "l4": "L4",
    "a10g": "A10G", "4090": "RTX-4090", "rtx4090": "RTX-4090", "RTX 4090": "RTX-4090", "mi300x": "MI300X",
    "mi325x": "MI325X", "h100-pcie": "H100-PCIe", "H100-SXM": "H100-SXM",
}


# --------------------------------------------------------------------------- parameter counts
def test_table_covers_the_catalog():
    assert {m.name for m in catalog.list_models()} == set(PUBLISHED_PARAMS)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_total_params_within_1pct_of_published(name):
    spec = catalog.load_model(name)
    assert spec.published_params == PUBLISHED_PARAMS[name]
    total = param_counts(spec).total
    assert total == pytest.approx(PUBLISHED_PARAMS[name], rel=0.01)


@pytest.mark.parametrize("name", sorted(PUBLISHED_ACTIVE))
def test_moe_active_params_near_published(name):
    counts = param_counts(catalog.load_model(name))
    assert counts.active == pytest.approx(PUBLISHED_ACTIVE[name], rel=0.02)
    assert counts.active < counts.total


@pytest.mark.parametrize("name", sorted(set(PUBLISHED_PARAMS) - set(PUBLISHED_ACTIVE)))
def test_dense_models_use_every_parameter(name):
    counts = param_counts(catalog.load_model(name))
    assert counts.active == counts.total and counts.per_layer_moe == 0


def test_parts_add_up():
    c = param_counts(catalog.load_model("DeepSeek-V3"))
    assert (c.num_dense_layers, c.num_moe_layers) == (3, 58)
    layers = 61 * c.per_layer_attention + 3 * c.per_layer_mlp + 58 * c.per_layer_moe
    assert c.total == c.embedding + c.lm_head + c.norms + layers


def test_tied_embeddings_have_no_lm_head():
    assert param_counts(catalog.load_model("gemma2-9b")).lm_head == 0
    assert param_counts(catalog.load_model("llama-8b")).lm_head == 128256 * 4096


TINY = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=96, vocab_size=128)
TINY_EXTRA = {
    "llama": {},
    "mistral": {},
    "qwen2": {},
    "qwen3": dict(head_dim=32),
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "qwen3_moe": dict(head_dim=32, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48),
    "deepseek_v3": dict(num_key_value_heads=4, n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                        n_shared_experts=1, first_k_dense_replace=1, q_lora_rank=24, kv_lora_rank=16,
                        qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16, n_group=2, topk_group=1),
    "gemma2": dict(head_dim=32),
}


@pytest.mark.parametrize("arch", sorted(TINY_EXTRA))
def test_param_counts_match_transformers(arch, tmp_path):
    """Build a tiny model of each architecture with transformers and count its saved tensors."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    config = transformers.AutoConfig.for_model(arch, **{**TINY, **TINY_EXTRA[arch]})
    model = transformers.AutoModelForCausalLM.from_config(config)
    # state_dict, not parameters(): DeepSeek's router bias is a checkpoint buffer; dedupe tied tensors
    tensors = {t.data_ptr(): t.numel() for t in model.state_dict().values()}
    config.save_pretrained(tmp_path)
    assert param_counts(catalog.load_model(str(tmp_path))).total == sum(tensors.values())


# --------------------------------------------------------------------------- model lookup
@pytest.mark.parametrize("alias,name", sorted(ALIASES.items()))
def test_model_aliases(alias, name):
    assert catalog.resolve_model_name(alias) == name
    assert catalog.load_model(alias).name == name


def test_unknown_model_suggests_close_names():
    with pytest.raises(UsageError) as err:
        catalog.load_model("lama-70b")
    message = str(err.value)
    assert "Llama-3.1-70B" in message and "plan models" in message and "\n" not in message


def test_loads_are_cached():
    assert catalog.load_model("llama-70b") is catalog.load_model("Llama-3.1-70B")


def _strip(spec):
    return spec.model_dump(exclude={"name", "hf_id", "aliases", "published_params", "source", "path"})


# Excerpts of the public config.json files (keys the planner reads).
HF_CONFIGS = {
    "Llama-3.1-70B": {
        "model_type": "llama", "hidden_size": 8192, "num_hidden_layers": 80, "num_attention_heads": 64,
        "num_key_value_heads": 8, "intermediate_size": 28672, "vocab_size": 128256,
        "max_position_embeddings": 131072, "rope_theta": 500000.0, "rms_norm_eps": 1e-05,
        "tie_word_embeddings": False, "attention_bias": False,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    },
    "DeepSeek-V3": {
        "model_type": "deepseek_v3", "hidden_size": 7168, "num_hidden_layers": 61, "num_attention_heads": 128,
        "num_key_value_heads": 128, "intermediate_size": 18432, "moe_intermediate_size": 2048,
        "vocab_size": 129280, "n_routed_experts": 256, "num_experts_per_tok": 8, "n_shared_experts": 1,
        "first_k_dense_replace": 3, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
        "qk_rope_head_dim": 64, "v_head_dim": 128, "max_position_embeddings": 163840, "rope_theta": 10000,
        "rms_norm_eps": 1e-06, "tie_word_embeddings": False, "attention_bias": False,
        "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                         "original_max_position_embeddings": 4096, "type": "yarn"},
    },
    "Gemma-2-9B": {  # no tie_word_embeddings key: Gemma-2 ties by default
        "model_type": "gemma2", "hidden_size": 3584, "num_hidden_layers": 42, "num_attention_heads": 16,
        "num_key_value_heads": 8, "head_dim": 256, "intermediate_size": 14336, "vocab_size": 256000,
        "max_position_embeddings": 8192, "rope_theta": 10000.0, "rms_norm_eps": 1e-06, "sliding_window": 4096,
    },
    "Qwen2.5-7B": {
        "model_type": "qwen2", "hidden_size": 3584, "num_hidden_layers": 28, "num_attention_heads": 28,
        "num_key_value_heads": 4, "intermediate_size": 18944, "vocab_size": 152064,
        "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-06,
        "tie_word_embeddings": False, "sliding_window": 131072, "use_sliding_window": False,
    },
    "Qwen3-30B-A3B": {  # transformers v5 style: rope_theta inside rope_parameters
        "model_type": "qwen3_moe", "hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 32,
        "num_key_value_heads": 4, "head_dim": 128, "intermediate_size": 6144, "moe_intermediate_size": 768,
        "num_experts": 128, "num_experts_per_tok": 8, "vocab_size": 151936, "max_position_embeddings": 40960,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}, "rms_norm_eps": 1e-06,
        "tie_word_embeddings": False,
    },
    "Mixtral-8x7B": {
        "model_type": "mixtral", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "intermediate_size": 14336, "num_local_experts": 8, "num_experts_per_tok": 2,
        "vocab_size": 32000, "max_position_embeddings": 32768, "rope_theta": 1e6, "rms_norm_eps": 1e-05,
        "tie_word_embeddings": False, "sliding_window": None,
    },
}


@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
def test_hf_config_maps_to_the_catalog_spec(name, tmp_path):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(HF_CONFIGS[name]))
    from_folder = catalog.load_model(str(folder))
    assert from_folder.name == name
    assert _strip(from_folder) == _strip(catalog.load_model(name))
    assert _strip(catalog.load_model(str(folder / "config.json"))) == _strip(from_folder)
    # both name the model folder, which vLLM and the built-in engine load
    assert catalog.load_model(str(folder / "config.json")).path == from_folder.path == str(folder.resolve())
    assert catalog.load_model(name).path is None


def test_hf_cache_layout_names_the_model(tmp_path):
    snapshot = tmp_path / "models--meta-llama--Llama-3.1-70B" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(HF_CONFIGS["Llama-3.1-70B"]))
    assert catalog.load_model(str(snapshot)).name == "Llama-3.1-70B"


def test_model_yaml_path(tmp_path):
    path = tmp_path / "mine.yaml"
    spec = catalog.load_model("llama-8b").model_copy(update={"name": "Mine"})
    spec.dump(path)
    assert catalog.load_model(str(path)).name == "Mine"


def test_bad_model_paths(tmp_path):
    with pytest.raises(UsageError, match="no config.json"):
        catalog.load_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({**HF_CONFIGS["Llama-3.1-70B"], "model_type": "mamba"}))
    with pytest.raises(UsageError, match="not supported"):
        catalog.load_model(str(tmp_path))
    with pytest.raises(UsageError, match="no such file"):
        catalog.load_model(str(tmp_path / "missing.yaml"))


# --------------------------------------------------------------------------- hardware
def test_every_gpu_profile_is_sourced():
    gpus = catalog.list_hardware(profile="datasheet")
    assert len(gpus) == 11
    required = {"memory_bytes", "memory_bandwidth_bytes_per_s", "peak_flops.bf16", "tdp_w", "price_per_gpu_hour"}
    for gpu in gpus:
        assert required <= set(gpu.sources), gpu.name
        assert ("fp8" in gpu.peak_flops) == ("peak_flops.fp8" in gpu.sources), gpu.name
        assert gpu.sources["memory_bytes"].value == gpu.memory_bytes
        assert gpu.sources["price_per_gpu_hour"].value == gpu.price_per_gpu_hour > 0
        assert gpu.provenance.kind == "datasheet"


def test_si_units():
    h100 = catalog.load_hardware("h100", profile="datasheet")
    assert h100.memory_bytes == 80 * 2**30                # an "80 GB" card holds 80 GiB
    assert h100.memory_bandwidth_bytes_per_s == 3.35e12
    assert h100.peak_flops["bf16"] == 989e12 and h100.peak_flops["fp8"] == 1979e12
    assert h100.interconnect.bandwidth_bytes_per_s == 450e9
    assert "fp8" not in catalog.load_hardware("a100", profile="datasheet").peak_flops
    assert catalog.load_hardware("mi300x", profile="datasheet").efficiency.gemm["bf16"] == 0.51


def test_memory_capacities_are_binary_and_agree_with_the_driver():
    """Datasheet "GB" of GPU memory are GiB: the 80 GB cards once held 80e9 bytes against the measured H100's 85.52e9
    (NVML), so the same 80 GiB gave 9% fewer KV tokens on an H100-PCIe than on an H100-SXM."""
    gpus = {h.name: h for h in catalog.list_hardware(profile="datasheet")}
    for h in gpus.values():
        assert h.memory_bytes % (512 * 2**20) == 0, h.name          # whole half-GiB (ECC's 1/16 of 24 GiB)
    assert gpus["H100-SXM"].memory_bytes == gpus["H100-PCIe"].memory_bytes == gpus["A100-80GB-SXM"].memory_bytes
    for name in ("H100-SXM", "H200"):                              # what the driver reported on the real cards
        measured = catalog.load_hardware(name, profile="measured").memory_bytes
        assert measured <= gpus[name].memory_bytes <= 1.01 * measured, name


@pytest.mark.parametrize("alias,name", sorted(GPU_ALIASES.items()))
def test_gpu_aliases(alias, name):
    assert catalog.resolve_hardware_name(alias) == name


def test_unknown_gpu_suggests_close_names():
    with pytest.raises(UsageError) as err:
        catalog.load_hardware("h1000")
    assert "H100" in str(err.value) and "plan gpus" in str(err.value)


@pytest.fixture
def user_hw(tmp_path, monkeypatch):
    """A $PLAN_HW_PATH directory with a custom GPU and a measured H100 profile."""
    custom = catalog.load_hardware("l4", profile="datasheet").model_copy(
        update={"name": "My-Card", "aliases": ["mycard"], "sources": {}})
    custom.dump(tmp_path / "my-card.yaml")
    (tmp_path / "measured").mkdir()
    measured = catalog.load_hardware("h100", profile="datasheet").model_dump(mode="json")
    measured["provenance"] = {"kind": "measured", "gpu": "NVIDIA H100 80GB HBM3"}
    (tmp_path / "measured" / "H100-SXM.yaml").write_text(yaml.safe_dump(measured))
    monkeypatch.setenv(catalog.HW_PATH_ENV, str(tmp_path))
    return tmp_path


def test_measured_profile_preferred(user_hw):
    assert catalog.load_hardware("h100").provenance.kind == "measured"
    assert catalog.load_hardware("h100", profile="measured").provenance.kind == "measured"
    assert catalog.load_hardware("h100", profile="datasheet").provenance.kind == "datasheet"
    with pytest.raises(UsageError, match="no measured profile"):
        catalog.load_hardware("l4", profile="measured")


def test_calibrated_profile_preferred_over_measured():
    assert catalog.load_hardware("h200").provenance.kind == "calibrated"
    assert catalog.load_hardware("h200", profile="measured").provenance.kind == "measured"
    with pytest.raises(UsageError, match="no calibrated profile"):
        catalog.load_hardware("l4", profile="calibrated")


def test_profile_path(user_hw):
    path = user_hw / "measured" / "H100-SXM.yaml"
    assert catalog.load_hardware("h100", profile=str(path)).provenance.kind == "measured"
    assert catalog.load_hardware(str(path)).provenance.kind == "measured"
    with pytest.raises(UsageError, match="profile must be"):
        catalog.load_hardware("h100", profile="fastest")


def test_user_gpu_files(user_hw):
    assert catalog.load_hardware("MYCARD").name == "My-Card"
    assert "My-Card" in {g.name for g in catalog.list_hardware()}


def test_missing_user_directory(tmp_path, monkeypatch):
    monkeypatch.setenv(catalog.HW_PATH_ENV, str(tmp_path / "nope"))
    with pytest.raises(UsageError, match="not a directory"):
        catalog.load_hardware("h100")


def test_price_overrides(tmp_path):
    gpus = [catalog.load_hardware(n, profile="datasheet") for n in ("h100", "mi300x", "l4")]
    path = tmp_path / "prices.yaml"
    path.write_text("h100: 2.25\nMI300X: 1.5\nb200: 7.0\n")   # b200 is a catalog GPU not in the list
    h100, mi300x, l4 = catalog.apply_price_overrides(gpus, path)
    assert (h100.price_per_gpu_hour, mi300x.price_per_gpu_hour) == (2.25, 1.5)
    assert l4 is gpus[2]
    assert str(path) in h100.sources["price_per_gpu_hour"].source
    assert gpus[0].price_per_gpu_hour == 3.95          # the cached original is untouched
    json_path = tmp_path / "prices.json"
    json_path.write_text(json.dumps({"RTX 4090": 0.5}))
    assert catalog.apply_price_overrides([catalog.load_hardware("4090")], json_path)[0].price_per_gpu_hour == 0.5


@pytest.mark.parametrize("text,match", [("tpu-v9: 1.0\n", "unknown GPU"), ("h100: -1\n", "non-negative"),
                                        ("h100: cheap\n", "non-negative"), ("- 1\n", "mapping")])
def test_bad_price_overrides(tmp_path, text, match):
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=match):
        catalog.apply_price_overrides([catalog.load_hardware("h100")], path)
