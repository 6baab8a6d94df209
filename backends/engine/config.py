"""What the engine is asked to run: the model (a planner ModelSpec), the engine limits and sampling.

No torch here, so the CLI can parse and reject a plan before paying for the torch import.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from planner.schemas import ModelSpec


def env_switch(name: str) -> bool:
    """An engine switch in the environment: "1" (the default) or "0"; anything else is an error."""
    value = os.environ.get(name, "1")
    if value not in ("0", "1"):
        raise ValueError(f"{name}={value!r}: expected 0 or 1")
    return value == "1"

# The architectures this engine's one decoder implements (they differ only in bias, q/k norm and RoPE).
SUPPORTED_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen3_moe")
WEIGHT_DTYPES = ("bf16", "fp16", "fp32", "fp8", "int8")     # fp8/int8: quantized from the loaded weights
KV_DTYPES = ("auto", "bf16", "fp16", "fp32", "fp8")
SUPPORTED_ROPE_TYPES = ("default", "llama3")
DTYPE_NAMES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
               "half": "float16", "fp32": "float32", "float32": "float32"}

# ~1M-parameter Llama for CPU tests and for the benchmark's smoke run.
TINY = ModelSpec(name="tiny", architecture="llama", hidden_size=64, num_layers=2, num_attention_heads=4,
                 num_kv_heads=2, intermediate_size=128, vocab_size=512, max_position_embeddings=2048,
                 rope_theta=10000.0, source="built-in test model")


class EngineError(ValueError):
    """A configuration the engine cannot run; the message says why in one line."""


# HF config keys without which no decoder can be built (the others have defaults).
_REQUIRED_HF_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


def check_device(device: str) -> None:
    """--device as `plan serve` and `plan bench run` take it; anything else fails here, not deep in torch."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise EngineError(f"unknown --device {device!r}: use auto (cuda when there is a GPU), cuda, cuda:N or cpu")


def spec_from_hf_config(cfg: dict, name: str = "local") -> ModelSpec:
    """A ModelSpec from a Hugging Face config.json dict (old rope_theta/rope_scaling or new rope_parameters)."""
    model_type = cfg.get("model_type", "llama")
    missing = [k for k in _REQUIRED_HF_KEYS if cfg.get(k) is None]
    if missing:
        raise EngineError(f"{name}: config.json lacks {', '.join(missing)} (not a Hugging Face decoder config)")
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise EngineError(f"model_type {model_type!r} is not supported by the built-in engine "
                          f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    rope_theta = float(rope.pop("rope_theta", cfg.get("rope_theta", 10000.0)))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    return ModelSpec(
        name=name, architecture=model_type, hidden_size=cfg["hidden_size"],
        num_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
        num_kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"], head_dim=cfg.get("head_dim"),
        intermediate_size=cfg["intermediate_size"], vocab_size=cfg["vocab_size"],
        tie_word_embeddings=cfg.get("tie_word_embeddings", False),
        max_position_embeddings=cfg.get("max_position_embeddings", 4096), rope_theta=rope_theta,
        rope_scaling=None if rope_type == "default" else rope, rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
        # Qwen2 always has q/k/v bias, though its config.json does not say so.
        attention_bias=cfg.get("attention_bias", model_type == "qwen2"), qk_norm=model_type in ("qwen3", "qwen3_moe"),
        num_experts=cfg.get("num_local_experts", cfg.get("num_experts", 0)) or 0,
        num_experts_per_tok=cfg.get("num_experts_per_tok", 0) or 0,
        moe_intermediate_size=cfg.get("moe_intermediate_size"),
        sliding_window=cfg.get("sliding_window") if cfg.get("use_sliding_window") else None, source="config.json")


def _eos_ids(folder: Path) -> list[int]:
    ids: list[int] = []
    for fname in ("generation_config.json", "config.json"):
        path = folder / fname
        if path.exists():
            eos = json.loads(path.read_text()).get("eos_token_id")
            for i in eos if isinstance(eos, list) else [eos]:
                if isinstance(i, int) and i not in ids:
                    ids.append(i)
    return ids


def resolve_model(name_or_path: str) -> tuple[ModelSpec, Path | None, list[int]]:
    """(spec, folder holding weights/tokenizer or None, eos token ids) for a catalog name, alias or local path."""
    path = Path(name_or_path)
    if path.exists():
        folder = path if path.is_dir() else path.parent
        config_file = path / "config.json" if path.is_dir() else path
        try:
            cfg = json.loads(config_file.read_text())
        except FileNotFoundError:
            raise EngineError(f"{path} has no config.json: give a model folder, `tiny` or a catalog name") from None
        except (OSError, ValueError) as e:
            raise EngineError(f"cannot read {config_file}: {' '.join(str(e).split())}") from None
        if not isinstance(cfg, dict):
            raise EngineError(f"{config_file}: expected a JSON object (a Hugging Face config.json)")
        spec = spec_from_hf_config(cfg, name=folder.name)
        return spec, folder, _eos_ids(folder)
    if name_or_path == "tiny":
        return TINY, None, []
    try:
        from planner.catalog import load_model  # another module of this project; may not exist yet
    except ImportError as e:
        raise EngineError(f"unknown model {name_or_path!r}: not a local path and the catalog is unavailable ({e})")
    spec = load_model(name_or_path)
    return spec, None, []


def check_spec(spec: ModelSpec) -> None:
    if (spec.architecture not in SUPPORTED_ARCHITECTURES or spec.is_mla or spec.post_norms
            or spec.num_shared_experts):
        raise EngineError(f"{spec.name}: architecture {spec.architecture!r} is not supported by the built-in "
                          f"engine ({', '.join(SUPPORTED_ARCHITECTURES)} only, no shared experts)")
    if spec.sliding_window:
        raise EngineError(f"{spec.name}: sliding-window attention is not supported by the built-in engine")
    rope_type = (spec.rope_scaling or {}).get("rope_type", (spec.rope_scaling or {}).get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise EngineError(f"{spec.name}: rope scaling {rope_type!r} is not supported (only llama3)")


@dataclass
class EngineConfig:
    model: ModelSpec
    model_path: Path | None = None          # folder with config.json, safetensors, tokenizer.json
    eos_token_ids: list[int] = field(default_factory=list)
    dtype: str = "auto"                        # bf16 on CUDA, fp32 on CPU
    kv_dtype: str = "auto"                     # same as dtype; fp8: e4m3 with a per-tensor scale
    weight_dtype: str = "auto"                 # same as dtype; fp8 | int8: quantized at load time
    tp: int = 1                                # tensor-parallel ranks (processes), one device each
    device: str = "cuda"
    load_format: str = "dummy"                 # dummy | safetensors
    seed: int = 0
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int | None = None        # default: the model's, capped by the KV cache
    block_size: int = 16
    gpu_memory_utilization: float = 0.90
    num_kv_blocks: int | None = None        # overrides the memory-based size; CPU default below
    cuda_graphs: bool = True
    # Launch step n+1 before reading step n's tokens (they reach the next step on the device), so the host's
    # scheduling and input work overlaps the GPU's. One process only: TP workers do not sample.
    async_scheduling: bool = False
    trace_path: str | None = None

    CPU_DEFAULT_KV_BLOCKS = 512

    def __post_init__(self):
        check_spec(self.model)
        if self.load_format not in ("dummy", "safetensors"):
            raise EngineError(f"load format {self.load_format!r}: use dummy or safetensors")
        if self.load_format == "safetensors" and self.model_path is None:
            raise EngineError("--load-format safetensors needs a local model folder")
        if self.dtype != "auto" and self.dtype not in DTYPE_NAMES:
            raise EngineError(f"dtype {self.dtype!r} is not supported (bf16, fp16 or fp32)")
        if self.kv_dtype != "auto" and self.kv_dtype not in (*DTYPE_NAMES, "fp8"):
            raise EngineError(f"kv_dtype {self.kv_dtype!r} is not supported (bf16, fp16, fp32 or fp8)")
        if self.weight_dtype != "auto" and self.weight_dtype not in (*DTYPE_NAMES, "fp8", "int8"):
            raise EngineError(f"weight_dtype {self.weight_dtype!r} is not supported (bf16, fp16, fp32, fp8, int8)")
        if self.tp < 1:
            raise EngineError("tp must be >= 1")
        if self.async_scheduling and self.tp > 1:
            raise EngineError("async scheduling runs with --tp 1 only: drop --async-scheduling or use one GPU")
        for name, n in (("attention heads", self.model.num_attention_heads),
                        ("intermediate size", self.model.moe_intermediate_size or self.model.intermediate_size)):
            if n % self.tp:
                raise EngineError(f"{self.model.name}: {name} ({n}) do not split over tp={self.tp}")
        kvh = self.model.num_kv_heads
        if kvh % self.tp and self.tp % kvh:
            raise EngineError(f"{self.model.name}: {kvh} KV heads neither split nor replicate over tp={self.tp}")
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1 or self.block_size < 1:
            raise EngineError("max_num_seqs, max_num_batched_tokens and block_size must be positive")

    @property
    def quant(self) -> str:
        """The weight scheme of the decoder's linear layers (quant.SCHEMES)."""
        return self.weight_dtype if self.weight_dtype in ("fp8", "int8") else "none"

    def torch_dtype_name(self, which: str = "dtype") -> str:
        """torch dtype name of the activations ("dtype") or of the KV cache ("kv_dtype"; fp8 -> float8_e4m3fn)."""
        value = getattr(self, which)
        if value == "fp8":
            return "float8_e4m3fn"
        if value == "auto" and which == "kv_dtype":
            value = self.dtype
        if value == "auto":
            return "bfloat16" if self.device.startswith("cuda") else "float32"
        return DTYPE_NAMES[value]


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 0.0                  # 0 = greedy
    seed: int | None = None                # per-request generator: same output whatever the batch
    ignore_eos: bool = False

    def __post_init__(self):
        if self.max_tokens < 1:
            raise EngineError("max_tokens must be >= 1")
        if self.temperature < 0:
            raise EngineError("temperature must be >= 0")
