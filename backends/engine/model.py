"""The Llama-family decoder (Llama 2/3/3.1, Mistral, Qwen2/2.5, Qwen3; Mixtral, Qwen3-MoE) over a paged KV cache.

Hugging Face's q/k/v and gate/up projections are fused into one matmul each (fewer, larger GEMMs: at batch 1
decode is a chain of weight reads). All linear layers are `linear.Linear`, which slices checkpoint matrices
for tensor parallelism (QKV, gate_up column parallel; o, down row parallel, all-reduced) and stores them in a
weight scheme (bf16, fp8, int8). Heads are split over ranks; KV heads are replicated when ranks outnumber them.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Iterable

import torch
from torch import nn

from planner.schemas import ModelSpec

from . import gemv, parallel
from .attention import AttentionMetadata, paged_attention
from .kernels import qk_norm_rope_store, rms_norm, rope_cos_sin, silu_and_mul
from .linear import Linear, column_shards
from .moe import MoE


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size), requires_grad=False)

    def forward(self, x, residual=None):
        return rms_norm(x, self.weight, self.eps, residual)

    def folded(self, parts: gemv.NormParts) -> gemv.Norm:
        """This norm, for the GEMV after it to apply (the residual stream's sums of squares in `parts`)."""
        return gemv.Norm(self.weight, self.eps, parts)


class Attention(nn.Module):
    def __init__(self, spec: ModelSpec, quant: str):
        super().__init__()
        hd = self.head_dim = spec.head_dim
        q_rows, kv_rows = parallel.split_heads(spec.num_attention_heads, hd), parallel.split_heads(spec.num_kv_heads, hd)
        self.num_heads, self.num_kv_heads = q_rows[1] // hd, kv_rows[1] // hd      # this rank's heads
        q_size, kv_size = spec.num_attention_heads * hd, spec.num_kv_heads * hd
        self.qkv_proj = Linear(spec.hidden_size, [q_size, kv_size, kv_size], bias=spec.attention_bias,
                               shards=[q_rows, kv_rows, kv_rows], quant=quant)
        self.o_proj = Linear(q_size, [spec.hidden_size], row_parallel=True, quant=quant)
        self.q_norm = RMSNorm(self.head_dim, spec.rms_norm_eps) if spec.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, spec.rms_norm_eps) if spec.qk_norm else None
        self.eps = spec.rms_norm_eps
        self.scale = self.head_dim ** -0.5
        # Set by the model runner once the cache is allocated: [num_blocks, block_size, kv_heads, head_dim].
        self.k_cache = self.v_cache = torch.empty(0)
        # Per-tensor scale of an fp8 cache. 1.0 (vLLM's uncalibrated default) suits K/V of normed models,
        # whose entries stay far below e4m3's 448.
        self.kv_scale = 1.0

    def split(self, qkv):
        """q [T,H,D], k, v [T,KVH,D]: views of the fused projection's output."""
        T, hd = qkv.shape[0], self.head_dim
        q_size, kv_size = self.num_heads * hd, self.num_kv_heads * hd
        return (qkv[:, :q_size].view(T, self.num_heads, hd), qkv[:, q_size:q_size + kv_size].view(T, self.num_kv_heads, hd),
                qkv[:, q_size + kv_size:].view(T, self.num_kv_heads, hd))

    def project(self, positions, x, cos_sin, meta: AttentionMetadata, norm: gemv.Norm | None = None):
        """The fused qkv projection (of RMSNorm(x) with `norm`), q/k RoPE'd in place, K/V stored in the cache:
        [T, (H + 2 KVH) D]."""
        qkv = self.qkv_proj(x, norm=norm)
        q, k, v = self.split(qkv)
        qk_norm_rope_store(q, k, v, positions, cos_sin, self.k_cache, self.v_cache, meta.slot_mapping,
                           self.q_norm.weight if self.q_norm else None,
                           self.k_norm.weight if self.k_norm else None, self.eps, self.kv_scale)
        return qkv

    def attend(self, qkv, meta: AttentionMetadata, out=None):
        """Attention of the projected tokens: [T, H D] (into `out` when given)."""
        q, k, v = self.split(qkv)
        o = paged_attention(q, k, v, self.k_cache, self.v_cache, meta, self.scale, self.kv_scale,
                            None if out is None else out.view(q.shape))
        return o.reshape(qkv.shape[0], self.num_heads * self.head_dim)


class MLP(nn.Module):
    """SiLU-gated MLP: gate_up column parallel, down row parallel (all-reduced unless `reduce=False`)."""

    def __init__(self, hidden_size: int, intermediate_size: int, quant: str, reduce: bool = True):
        super().__init__()
        self.gate_up_proj = Linear(hidden_size, [intermediate_size] * 2,
                                   shards=column_shards([intermediate_size] * 2), quant=quant)
        self.down_proj = Linear(intermediate_size, [hidden_size], row_parallel=True, reduce=reduce, quant=quant)

    def forward(self, x):
        return self.down_proj(silu_and_mul(self.gate_up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec, quant: str):
        super().__init__()
        self.self_attn = Attention(spec, quant)
        self.mlp = MoE(spec, quant) if spec.is_moe else MLP(spec.hidden_size, spec.intermediate_size, quant)
        self.input_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)

    # The residual stream is carried separately so each norm fuses the preceding residual add. With `parts`
    # (fused_norms.py) the norms live in the GEMVs instead: o_proj and down add into the residual stream, qkv
    # and gate_up normalize it as they read it, and x between the pieces is None.
    def pre_attention(self, positions, x, residual, cos_sin, meta, parts: gemv.NormParts | None = None):
        if residual is None:
            residual, x = x, self.input_layernorm(x)
        elif parts is not None:
            return self.self_attn.project(positions, residual, cos_sin, meta, self.input_layernorm.folded(parts)), residual
        else:
            x, residual = self.input_layernorm(x, residual)
        return self.self_attn.project(positions, x, cos_sin, meta), residual

    def post_attention(self, o, residual, parts: gemv.NormParts | None = None):
        if parts is None:
            x, residual = self.post_attention_layernorm(self.self_attn.o_proj(o), residual)
            return self.mlp(x), residual
        self.self_attn.o_proj(o, add_to=gemv.AddTo(residual, parts))
        mlp = self.mlp
        gate_up = mlp.gate_up_proj(residual, norm=self.post_attention_layernorm.folded(parts))
        mlp.down_proj(silu_and_mul(gate_up), add_to=gemv.AddTo(residual, parts))
        return None, residual


class Decoder(nn.Module):
    def __init__(self, spec: ModelSpec, quant: str):
        super().__init__()
        self.embed_tokens = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.embed_tokens.weight.requires_grad_(False)
        self.layers = nn.ModuleList(DecoderLayer(spec, quant) for _ in range(spec.num_layers))
        self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)


class CausalLM(nn.Module):
    def __init__(self, spec: ModelSpec, max_model_len: int, quant: str = "none"):
        super().__init__()
        self.spec = spec
        self.model = Decoder(spec, quant)
        # Replicated on every rank and never quantized (as vLLM does): logits are cheap next to their accuracy.
        self.lm_head = Linear(spec.hidden_size, [spec.vocab_size])
        if spec.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # fp32 cos/sin table, indexed by position (rope in fp32 even for bf16 models)
        # Row counts whose forward folds the norms into the GEMVs (fused_norms.tune), and the partial sums of
        # squares those GEMVs pass along.
        self.fused_rows: frozenset[int] = frozenset()
        self.norm_parts: gemv.NormParts | None = None
        self.register_buffer("cos_sin", rope_cos_sin(spec.head_dim, max_model_len, spec.rope_theta,
                                                     spec.rope_scaling, self.lm_head.weight.device).float(),
                             persistent=False)

    def forward(self, input_ids, positions, meta: AttentionMetadata) -> torch.Tensor:
        """input_ids, positions: [T] -> final hidden states [T, hidden]."""
        parts = self.norm_parts if input_ids.shape[0] in self.fused_rows else None
        h, residual = self.piece(0, input_ids, positions, None, meta, parts)
        for i, layer in enumerate(self.model.layers):
            h, residual = self.piece(i + 1, layer.self_attn.attend(h, meta), positions, residual, meta, parts)
        return h

    def fold_norms(self, rows: Iterable[int]) -> None:
        """Forwards of these row counts fold the layers' RMSNorms into their GEMVs (the scheme's `fused` table
        names a GEMV for each linear shape at each of them)."""
        self.fused_rows = frozenset(rows)
        hidden, device = self.spec.hidden_size, self.lm_head.weight.device
        self.norm_parts = gemv.NormParts(-(-hidden // 16), device) if self.fused_rows else None

    @property
    def num_pieces(self) -> int:
        return len(self.model.layers) + 1

    def piece(self, i: int, inp, positions, residual, meta: AttentionMetadata, parts: gemv.NormParts | None = None):
        """The forward between attentions (what piecewise CUDA graphs capture), returning (output, residual).
        Piece 0 embeds the token ids `inp` and projects layer 0's qkv; piece i finishes layer i-1 from its
        attention output `inp` and projects layer i's qkv; the last finishes the last layer and applies the
        final norm (output: hidden states). `parts`: the norms folded into the GEMVs (DecoderLayer)."""
        layers = self.model.layers
        if i == 0:
            x, residual = self.model.embed_tokens(inp), None
        else:
            x, residual = layers[i - 1].post_attention(inp, residual, parts)
        if i == len(layers):
            return (self.model.norm(residual) if x is None else self.model.norm(x, residual)[0]), residual
        return layers[i].pre_attention(positions, x, residual, self.cos_sin, meta, parts)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    # ----------------------------------------------------------------------- weights
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        params = dict(self.named_parameters())
        loaded = set()
        for name, tensor in weights:
            if "rotary_emb" in name or (name == "lm_head.weight" and self.spec.tie_word_embeddings):
                continue
            for target, shard, part in checkpoint_targets(name, tensor):
                module = self.get_submodule(target.rpartition(".")[0])
                if target not in params:
                    raise KeyError(f"checkpoint tensor {name} has no place in the model")
                if isinstance(module, Linear):
                    module.weight_loader(params[target], part, shard)
                else:
                    params[target].data.copy_(part)
                loaded.add(target)
        missing = {n for n in params if not n.endswith("weight_scale")} - loaded
        missing -= {"lm_head.weight"} if self.spec.tie_word_embeddings else set()
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
        """Seeded random weights, generated on the device in the model dtype, one Linear at a time (quantized
        ones are quantized block by block); norm weights stay 1."""
        dtype = self.model.embed_tokens.weight.dtype
        gen = torch.Generator(device=self.model.embed_tokens.weight.device).manual_seed(seed)
        self.model.embed_tokens.weight.normal_(0.0, 0.02, generator=gen)
        for module in self.modules():
            if isinstance(module, Linear) and not (module is self.lm_head and self.spec.tie_word_embeddings):
                module.init_random(gen, dtype)


# Checkpoint names that differ from ours: Mixtral's block_sparse_moe with w1/w3/w2 experts.
RENAMES = (("block_sparse_moe.", "mlp."), (".w1.", ".gate_proj."), (".w3.", ".up_proj."), (".w2.", ".down_proj."))
PACKED = {"q_proj": ("qkv_proj", 0), "k_proj": ("qkv_proj", 1), "v_proj": ("qkv_proj", 2),
          "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1)}


def checkpoint_targets(name: str, tensor: torch.Tensor):
    """(our parameter, shard index, tensor) for one checkpoint tensor; transformers 5 stacks all experts of a
    layer in one `experts.gate_up_proj` [E, 2I, H] / `experts.down_proj` [E, H, I], which fans out here."""
    for old, new in RENAMES:
        name = name.replace(old, new)
    if name.endswith("experts.gate_up_proj"):
        inter = tensor.shape[1] // 2
        for e, w in enumerate(tensor):
            yield f"{name[:-len('gate_up_proj')]}{e}.gate_up_proj.weight", 0, w[:inter]
            yield f"{name[:-len('gate_up_proj')]}{e}.gate_up_proj.weight", 1, w[inter:]
        return
    if name.endswith("experts.down_proj"):
        for e, w in enumerate(tensor):
            yield f"{name[:-len('down_proj')]}{e}.down_proj.weight", 0, w
        return
    module_name, _, leaf = name.rpartition(".")
    parent, _, proj = module_name.rpartition(".")
    if proj in PACKED:
        fused, shard = PACKED[proj]
        yield f"{parent}.{fused}.{leaf}", shard, tensor
    else:
        yield name, 0, tensor


def build_model(spec: ModelSpec, max_model_len: int, dtype: torch.dtype, device: torch.device,
                quant: str = "none") -> CausalLM:
    """Parameters are allocated directly on `device` in `dtype` (quantized ones in theirs); weights are left for
    the caller to load."""
    old_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = CausalLM(spec, max_model_len, quant)
    finally:
        torch.set_default_dtype(old_dtype)
    return model.eval()
