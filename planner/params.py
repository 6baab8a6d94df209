"""Parameter counts of a ModelSpec, split the way the cost model needs them.

Pure arithmetic on the config numbers; the layout follows the Hugging Face modules of each
architecture (SwiGLU MLPs: gate, up and down projections; RMSNorm weights without bias).
"""
from __future__ import annotations

from dataclasses import dataclass

from planner.schemas import ModelSpec


@dataclass(frozen=True)
class ParamCounts:
    total: int
    active: int                  # used per token: all but the routed experts a token does not visit
    embedding: int
    lm_head: int                 # 0 when tied to the embedding
    per_layer_attention: int     # projections, biases, and norms inside attention (qk_norm, MLA norms)
    per_layer_mlp: int           # one dense MLP
    per_layer_moe: int           # one MoE block: router, all routed experts, shared experts
    per_layer_moe_active: int    # one MoE block as a token sees it: router, top-k experts, shared
    per_expert: int              # one routed expert (0 for dense models)
    per_layer_norms: int         # the residual-stream norms of one layer
    num_dense_layers: int
    num_moe_layers: int
    norms: int                   # every residual-stream norm, the final norm included

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding - self.lm_head


def _swiglu(hidden: int, intermediate: int) -> int:
    return 3 * hidden * intermediate


def _attention(spec: ModelSpec) -> int:
    if spec.is_mla:
        return _mla_attention(spec)
    h = spec.hidden_size
    q_dim = spec.num_attention_heads * spec.head_dim
    kv_dim = spec.num_kv_heads * spec.head_dim
    count = h * q_dim + 2 * h * kv_dim + q_dim * h
    if spec.attention_bias:
        count += q_dim + 2 * kv_dim
    if spec.qk_norm:
        count += 2 * spec.head_dim
    return count


def _mla_attention(spec: ModelSpec) -> int:
    h, heads = spec.hidden_size, spec.num_attention_heads
    qk_head = spec.qk_nope_head_dim + spec.qk_rope_head_dim
    if spec.q_lora_rank is None:
        q = h * heads * qk_head
    else:  # q_a_proj, q_a_layernorm, q_b_proj
        q = h * spec.q_lora_rank + spec.q_lora_rank + spec.q_lora_rank * heads * qk_head
    # kv_a_proj_with_mqa emits the latent plus the shared rope key; kv_b_proj expands the latent.
    kv = (h * (spec.kv_lora_rank + spec.qk_rope_head_dim) + spec.kv_lora_rank
          + spec.kv_lora_rank * heads * (spec.qk_nope_head_dim + spec.v_head_dim))
    o = heads * spec.v_head_dim * h
    return q + kv + o


def _moe(spec: ModelSpec, experts: int) -> int:
    """One MoE block with `experts` routed experts counted."""
    h = spec.hidden_size
    router = h * spec.num_experts
    if spec.architecture == "deepseek_v3":
        router += spec.num_experts  # e_score_correction_bias
    shared_width = spec.shared_expert_intermediate_size or spec.moe_intermediate_size
    shared = spec.num_shared_experts * _swiglu(h, shared_width)
    return router + experts * _swiglu(h, spec.moe_intermediate_size) + shared


def param_counts(spec: ModelSpec) -> ParamCounts:
    h = spec.hidden_size
    embedding = spec.vocab_size * h
    lm_head = 0 if spec.tie_word_embeddings else spec.vocab_size * h
    attention = _attention(spec)
    mlp = _swiglu(h, spec.intermediate_size)
    moe = _moe(spec, spec.num_experts) if spec.is_moe else 0
    moe_active = _moe(spec, spec.num_experts_per_tok) if spec.is_moe else 0
    layer_norms = (4 if spec.post_norms else 2) * h
    n_dense = min(spec.first_k_dense_layers, spec.num_layers) if spec.is_moe else spec.num_layers
    n_moe = spec.num_layers - n_dense
    norms = spec.num_layers * layer_norms + h

    shared = embedding + lm_head + norms + spec.num_layers * attention + n_dense * mlp
    return ParamCounts(
        total=shared + n_moe * moe,
        active=shared + n_moe * moe_active,
        embedding=embedding,
        lm_head=lm_head,
        per_layer_attention=attention,
        per_layer_mlp=mlp,
        per_layer_moe=moe,
        per_layer_moe_active=moe_active,
        per_expert=_swiglu(h, spec.moe_intermediate_size) if spec.is_moe else 0,
        per_layer_norms=layer_norms,
        num_dense_layers=n_dense,
        num_moe_layers=n_moe,
        norms=norms,
    )
