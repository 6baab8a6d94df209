"""Decode steps with each layer's two RMSNorms folded into the GEMVs around them, at the row counts where that wins.

At 1-32 rows a layer runs norm, qkv, RoPE, attention, o_proj, norm, gate_up, SiLU, down: each norm a ~2 us kernel
plus its launch gap, for a few KB. Folded (gemv.Norm, gemv.AddTo), o_proj and down add into the residual stream
and leave its per-row sums of squares behind, and qkv and gate_up normalize the stream as they read it: two
kernels fewer a layer. cuBLAS has no such epilogue, so all four linears then run on the Triton GEMVs; at each
decode graph's row count the start-up race times the four folded GEMVs (the best tile each) against the linear
race's winners plus two norm kernels, over cold weight copies, and folds the norms only where that is faster.

Dense bf16/fp16 models on one GPU (under tensor parallelism o_proj's sum is complete only after its all-reduce);
PLAN_ENGINE_FUSED_NORMS=0 turns it off.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from . import gemv, parallel, quant
from .config import env_switch
from .kernels import rms_norm


def enabled() -> bool:
    return env_switch("PLAN_ENGINE_FUSED_NORMS")


def eligible(model: torch.nn.Module, dtype: torch.dtype) -> bool:
    """On, one GPU with Triton, a dense model whose linears are unquantized bf16/fp16."""
    return (enabled() and parallel.size() == 1 and not model.spec.is_moe and dtype in (torch.bfloat16, torch.float16)
            and quant.use_triton(model.lm_head.weight)
            and all(m.scheme is quant.SCHEMES["none"] for m in model.modules() if hasattr(m, "scheme")))


def _candidates(x: torch.Tensor) -> list[str]:
    names = ["triton"]
    if gemv.tma_wanted(x):
        names += [n for n, cfg in gemv.TMA_CONFIGS.items() if x.shape[1] % cfg["BLOCK_K"] == 0]
    return names


def tune(model: torch.nn.Module, dtype: torch.dtype, rows_list: Sequence[int]) -> dict[str, dict]:
    """Races folded against unfolded norms at each of `rows_list` up to gemv.MAX_ROWS (after the linear race, whose
    winners it compares against); fills the scheme's `fused` table and the model's `fused_rows`. Returns
    {rows: {"folded": bool, "folded_us", "unfolded_us", and the folded GEMV of each "NxK"}}."""
    scheme = quant.SCHEMES["none"]
    layer = model.model.layers[0]            # every layer has the same shapes
    attn, mlp = layer.self_attn, layer.mlp
    hidden, device = model.spec.hidden_size, model.lm_head.weight.device
    parts = gemv.NormParts(-(-hidden // 16), device)
    parts.sums.fill_(1.0)
    parts.count = -(-hidden // 64)
    report, fused, folded_rows = {}, {}, []
    for rows in (r for r in rows_list if r <= gemv.MAX_ROWS):
        h = torch.randn(rows, hidden, dtype=dtype, device=device)
        norm = gemv.Norm(layer.input_layernorm.weight, layer.input_layernorm.eps, parts)
        # (linear, its input, the fusion) for qkv, o_proj, gate_up and down
        linears = [(attn.qkv_proj, h, dict(norm=norm)),
                   (attn.o_proj, torch.randn(rows, attn.o_proj.weight.shape[1], dtype=dtype, device=device),
                    dict(add_to=gemv.AddTo(h.clone(), parts))),
                   (mlp.gate_up_proj, h, dict(norm=norm)),
                   (mlp.down_proj, torch.randn(rows, mlp.down_proj.weight.shape[1], dtype=dtype, device=device),
                    dict(add_to=gemv.AddTo(h.clone(), parts)))]
        residual = h.clone()
        norm_s = quant.timed({"norm": lambda: rms_norm(h, norm.weight, norm.eps, residual)})["norm"]
        folded_s, unfolded_s, choice = 0.0, 2 * norm_s, {}
        for linear, x, fusion in linears:
            n, k = linear.weight.shape
            backend = scheme.backends.get((n, k, rows))
            if backend is None:
                break
            unfolded_s += quant.timed_cold(linear, lambda c: {
                backend: quant.Unquantized.candidates(c, x)[backend]})[backend]
            times = quant.timed_cold(linear, lambda c: {
                name: lambda c=c, name=name: quant.gemv_call(name, x, c.weight, **fusion) for name in _candidates(x)})
            choice[f"{n}x{k}"] = min(times, key=times.get)
            folded_s += times[choice[f"{n}x{k}"]]
        else:
            won = folded_s < unfolded_s
            report[str(rows)] = {"folded": won, "folded_us": round(folded_s * 1e6, 2),
                                 "unfolded_us": round(unfolded_s * 1e6, 2), **choice}
            if won:
                folded_rows.append(rows)
                fused.update({(*map(int, shape.split("x")), rows): name for shape, name in choice.items()})
    scheme.fused = fused
    model.fold_norms(folded_rows)
    return report
