"""Mixture-of-experts MLP (Mixtral, Qwen3-MoE): softmax router, top-k, renormalised weights, SiLU experts.

Under tensor parallelism each expert's intermediate dimension is split (gate_up column parallel, down row
parallel) and the one all-reduce comes after the experts' outputs are summed.

Two ways to run the experts, same result:
  grouped: tokens sorted by expert, one GEMM pair per expert that has tokens. Needs the per-expert counts on
      the host (a sync), so it is the eager path (prefill, CPU).
  dense:   every expert over every token, weighted by its (mostly zero) routing weight. No sync, so it is what
      CUDA graphs capture for decode, where the batch is small and all experts' weights are read anyway.
"""
from __future__ import annotations

import torch
from torch import nn

from planner.schemas import ModelSpec

from . import parallel
from .kernels import silu_and_mul
from .linear import Linear, column_shards


class Expert(nn.Module):
    def __init__(self, hidden: int, inter: int, quant: str):
        super().__init__()
        self.gate_up_proj = Linear(hidden, [inter] * 2, shards=column_shards([inter] * 2), quant=quant)
        self.down_proj = Linear(inter, [hidden], row_parallel=True, reduce=False, quant=quant)

    def forward(self, x):
        return self.down_proj(silu_and_mul(self.gate_up_proj(x)))


class MoE(nn.Module):
    def __init__(self, spec: ModelSpec, quant: str):
        super().__init__()
        self.top_k = spec.num_experts_per_tok
        inter = spec.moe_intermediate_size or spec.intermediate_size
        self.gate = Linear(spec.hidden_size, [spec.num_experts])     # router: replicated, full precision
        self.experts = nn.ModuleList(Expert(spec.hidden_size, inter, quant) for _ in range(spec.num_experts))

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(weights [T, k] in x's dtype, expert ids [T, k]). Both models renormalise the top-k (Mixtral always;
        the released Qwen3-MoE checkpoints set norm_topk_prob)."""
        probs = torch.softmax(self.gate(x).float(), dim=-1)
        weights, ids = probs.topk(self.top_k, dim=-1)
        return (weights / weights.sum(dim=-1, keepdim=True)).to(x.dtype), ids

    def forward(self, x):
        weights, ids = self.route(x)
        capturing = x.is_cuda and torch.cuda.is_current_stream_capturing()
        out = self._dense(x, weights, ids) if capturing else self._grouped(x, weights, ids)
        return parallel.all_reduce(out)

    def _grouped(self, x, weights, ids):
        flat = ids.flatten()
        order = flat.argsort(stable=True)
        rows = order // self.top_k                       # token of each (token, slot) pair, grouped by expert
        counts = torch.bincount(flat, minlength=len(self.experts)).tolist()
        out = torch.zeros_like(x)
        start = 0
        for e, n in enumerate(counts):
            if n:
                sel = order[start:start + n]
                y = self.experts[e](x[rows[start:start + n]]) * weights.flatten()[sel, None]
                out.index_add_(0, rows[start:start + n], y)
                start += n
        return out

    def _dense(self, x, weights, ids):
        # Routing weight of every (token, expert): zero where the expert was not chosen.
        dense = torch.zeros(x.shape[0], len(self.experts), dtype=x.dtype, device=x.device)
        dense.scatter_(1, ids, weights)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            out += expert(x) * dense[:, e:e + 1]
        return out
