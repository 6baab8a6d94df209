"""RMSNorm (with its residual add) fused into the linear that reads it, and SiLU-and-mul into gate_up, at decode
batch sizes.

At 1-16 rows a decoder layer is ~11 kernels, each norm a ~2 us kernel plus a launch; gemv.gemv_norm does the
norm inside the GEMV after it (qkv after the input norm, gate_up with its SiLU after the post-attention norm).
Whether that beats the norm kernel plus the linear's raced backend (plus the SiLU kernel) depends on the shape
and the row count, so it is timed at start-up as the linears are (quant._race, over cold weight copies), per
(N, K, rows, gated), and used only where it won. PLAN_ENGINE_FUSE_NORM=0 turns it off.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

from . import gemv, parallel
from .config import env_switch
from .kernels import silu_and_mul, use_triton
from .quant import SCHEMES, cold_copies, in_turn, fastest

_choices: dict[tuple[int, int, int, bool], dict] = {}   # (N, K, rows, gated) -> the gemv_norm tiles that won


def norm_linear(norm: nn.Module, linear: nn.Module, h: torch.Tensor, residual: torch.Tensor,
                gated: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(linear(norm(h + residual)), SiLU(gate) * up of it when `gated`; and the residual h + residual)."""
    cfg = _choices.get((*linear.weight.shape, h.shape[0], gated)) if _choices else None
    if cfg is not None:
        return gemv.gemv_norm(h, residual, norm.weight, norm.eps, linear.weight, cfg, gated)
    x, residual = norm(h, residual)
    y = linear(x)
    return (silu_and_mul(y) if gated else y), residual


def _unfused(norm, layer, h, residual, gated):
    y = SCHEMES["none"].apply(layer, norm(h, residual)[0])
    return silu_and_mul(y) if gated else y


def _sites(model: nn.Module) -> dict[tuple[int, int, bool], tuple[nn.Module, nn.Module]]:
    """{(N, K, gated): (norm, linear)} for the norm -> linear pairs norm_linear serves: bf16/fp16 weights (the
    "none" scheme) without a bias, the SiLU-gated MLP's gate_up (not MoE experts)."""
    sites = {}
    for layer in model.model.layers:
        pairs = [(layer.input_layernorm, layer.self_attn.qkv_proj, False)]
        if hasattr(layer.mlp, "gate_up_proj"):
            pairs.append((layer.post_attention_layernorm, layer.mlp.gate_up_proj, True))
        for norm, linear, gated in pairs:
            if linear.scheme is SCHEMES["none"] and linear.bias is None:
                sites.setdefault((*linear.weight.shape, gated), (norm, linear))
    return sites


def tune(model: nn.Module, dtype: torch.dtype, rows_list: Sequence[int]) -> dict[str, dict[str, str]]:
    """Races gemv_norm's tiles against the unfused norm + linear (+ SiLU) at each of `rows_list` <= 16 for every
    norm -> linear shape of `model` (CUDA, after the linears' own race, before capture). An empty `rows_list`
    clears earlier choices (a process may hold several runners). Returns {"NxK[+silu]": {"rows": winner}}."""
    _choices.clear()
    choices = {}
    rows_list = [r for r in rows_list if r <= gemv.MAX_ROWS]
    if not rows_list or not env_switch("PLAN_ENGINE_FUSE_NORM") or dtype not in (torch.bfloat16, torch.float16):
        return {}
    report: dict[str, dict[str, str]] = {}
    for (n, k, gated), (norm, linear) in _sites(model).items():
        if not use_triton(linear.weight):
            continue
        copies = cold_copies(linear)
        configs = gemv.norm_configs(n // 2 if gated else n, k, linear.weight.device)
        for rows in rows_list:
            h = torch.randn(rows, k, dtype=dtype, device=linear.weight.device)
            res = torch.randn_like(h)
            calls = {"unfused": in_turn([functools.partial(_unfused, norm, c, h, res, gated) for c in copies])}
            for i, cfg in enumerate(configs):
                calls[f"fused {cfg['BLOCK_N']}x{cfg['BLOCK_K']}"] = in_turn(
                    [functools.partial(gemv.gemv_norm, h, res, norm.weight, norm.eps, c.weight, cfg, gated)
                     for c in copies])
            won = fastest(calls)
            report.setdefault(f"{n}x{k}" + ("+silu" if gated else ""), {})[str(rows)] = won
            if won != "unfused":
                choices[(n, k, rows, gated)] = configs[list(calls).index(won) - 1]
        del copies
    # rank 0's choices on every rank (the ranks' residual streams then round alike)
    _choices.update(parallel.broadcast(choices) if parallel.size() > 1 else choices)
    return report
