"""The Llama-family decoder (Llama 2/3/3.1, Mistral, Qwen2/2.5, Qwen3) over a paged KV cache.

Hugging Face's q/k/v and gate/up projections are fused into one matmul each (fewer, larger GEMMs: at batch 1
decode is a chain of weight reads). All linear layers are `Linear`: tensor-parallel shards (column/row) and
quantized weights plug in there, as subclasses with their own `weight_loader` and `forward`.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from planner.schemas import ModelSpec

from .attention import AttentionMetadata, paged_attention
from .kernels import qk_norm_rope_store, rms_norm, rope_cos_sin, silu_and_mul


class Linear(nn.Module):
    """y = x W^T (+ b), where W stacks `out_sizes` checkpoint matrices (shard i fills rows of out_sizes[i])."""

    def __init__(self, in_features: int, out_sizes: list[int], bias: bool = False):
        super().__init__()
        self.out_sizes = out_sizes
        self.weight = nn.Parameter(torch.empty(sum(out_sizes), in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(sum(out_sizes)), requires_grad=False) if bias else None

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard: int = 0) -> None:
        offset = sum(self.out_sizes[:shard])
        param.data[offset:offset + loaded.shape[0]].copy_(loaded)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size), requires_grad=False)

    def forward(self, x, residual=None):
        return rms_norm(x, self.weight, self.eps, residual)


class Attention(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = spec.num_attention_heads, spec.num_kv_heads, spec.head_dim
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.qkv_proj = Linear(spec.hidden_size, [q_size, kv_size, kv_size], bias=spec.attention_bias)
        self.o_proj = Linear(q_size, [spec.hidden_size])
        self.q_norm = RMSNorm(self.head_dim, spec.rms_norm_eps) if spec.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, spec.rms_norm_eps) if spec.qk_norm else None
        self.eps = spec.rms_norm_eps
        self.scale = self.head_dim ** -0.5
        # Set by the model runner once the cache is allocated: [num_blocks, block_size, kv_heads, head_dim].
        self.k_cache = self.v_cache = torch.empty(0)

    def forward(self, positions, x, cos_sin, meta: AttentionMetadata):
        T = x.shape[0]
        qkv = self.qkv_proj(x)
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        q = qkv[:, :q_size].view(T, self.num_heads, self.head_dim)
        k = qkv[:, q_size:q_size + kv_size].view(T, self.num_kv_heads, self.head_dim)
        v = qkv[:, q_size + kv_size:].view(T, self.num_kv_heads, self.head_dim)
        qk_norm_rope_store(q, k, v, positions, cos_sin, self.k_cache, self.v_cache, meta.slot_mapping,
                           self.q_norm.weight if self.q_norm else None,
                           self.k_norm.weight if self.k_norm else None, self.eps)
        o = paged_attention(q, k, v, self.k_cache, self.v_cache, meta, self.scale)
        return self.o_proj(o.reshape(T, q_size))


class MLP(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.gate_up_proj = Linear(spec.hidden_size, [spec.intermediate_size] * 2)
        self.down_proj = Linear(spec.intermediate_size, [spec.hidden_size])

    def forward(self, x):
        return self.down_proj(silu_and_mul(self.gate_up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.self_attn = Attention(spec)
        self.mlp = MLP(spec)
        self.input_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)

    def forward(self, positions, x, residual, cos_sin, meta):
        # The residual stream is carried separately so each norm fuses the preceding residual add.
        if residual is None:
            residual, x = x, self.input_layernorm(x)
        else:
            x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(positions, x, cos_sin, meta)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x), residual


class Decoder(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.embed_tokens = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.embed_tokens.weight.requires_grad_(False)
        self.layers = nn.ModuleList(DecoderLayer(spec) for _ in range(spec.num_layers))
        self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)


class CausalLM(nn.Module):
    # Hugging Face checkpoint name -> (our fused parameter, shard index)
    PACKED = {"q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
              "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1)}

    def __init__(self, spec: ModelSpec, max_model_len: int):
        super().__init__()
        self.spec = spec
        self.model = Decoder(spec)
        self.lm_head = Linear(spec.hidden_size, [spec.vocab_size])
        if spec.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # fp32 cos/sin table, indexed by position (rope in fp32 even for bf16 models)
        self.register_buffer("cos_sin", rope_cos_sin(spec.head_dim, max_model_len, spec.rope_theta,
                                                     spec.rope_scaling, self.lm_head.weight.device).float(),
                             persistent=False)

    def forward(self, input_ids, positions, meta: AttentionMetadata) -> torch.Tensor:
        """input_ids, positions: [T] -> final hidden states [T, hidden]."""
        x, residual = self.model.embed_tokens(input_ids), None
        for layer in self.model.layers:
            x, residual = layer(positions, x, residual, self.cos_sin, meta)
        x, _ = self.model.norm(x, residual)
        return x

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    # ----------------------------------------------------------------------- weights
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        params = dict(self.named_parameters())
        loaded = set()
        for name, tensor in weights:
            if "rotary_emb" in name or (name == "lm_head.weight" and self.spec.tie_word_embeddings):
                continue
            module_name, _, leaf = name.rpartition(".")
            proj = module_name.rpartition(".")[2]
            if proj in self.PACKED:
                fused, shard = self.PACKED[proj]
                target = f"{module_name.rpartition('.')[0]}.{fused}.{leaf}"
                self.get_submodule(target.rpartition(".")[0]).weight_loader(params[target], tensor, shard)
            else:
                target = name
                if target not in params:
                    raise KeyError(f"checkpoint tensor {name} has no place in the model")
                params[target].data.copy_(tensor)
            loaded.add(target)
        missing = set(params) - loaded - ({"lm_head.weight"} if self.spec.tie_word_embeddings else set())
        if missing:
            raise KeyError(f"checkpoint lacks {len(missing)} tensors, e.g. {sorted(missing)[:3]}")

    def load_safetensors(self, folder: str) -> None:
        from safetensors import safe_open
        files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
        if not files:
            raise FileNotFoundError(f"no *.safetensors in {folder}")
        device = str(self.lm_head.weight.device)

        def tensors():
            for f in files:
                # straight to the device, one tensor at a time: no CPU copy of the whole model
                with safe_open(f, framework="pt", device=device) as st:
                    for name in st.keys():
                        yield name, st.get_tensor(name)
        self.load_weights(tensors())

    def init_dummy(self, seed: int) -> None:
        """Seeded random weights, generated on the device in the model dtype (norm weights stay 1)."""
        gen = torch.Generator(device=self.lm_head.weight.device).manual_seed(seed)
        for module in self.modules():
            if isinstance(module, (Linear, nn.Embedding)):
                for p in module.parameters(recurse=False):
                    p.normal_(0.0, 0.02, generator=gen)


def build_model(spec: ModelSpec, max_model_len: int, dtype: torch.dtype, device: torch.device) -> CausalLM:
    """Parameters are allocated directly on `device` in `dtype`; weights are left for the caller to load."""
    old_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = CausalLM(spec, max_model_len)
    finally:
        torch.set_default_dtype(old_dtype)
    return model.eval()
