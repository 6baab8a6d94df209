"""Tile-size sweep of the engine's Triton GEMV (backends/engine/gemv.py) at decode batch 1 on the GPU.

    python3 benchmarks/gemv_sweep.py --out gemv_sweep.json

For Llama-3.1-8B's layer shapes, bf16 and fp8 (e4m3, per-row scale) weights: each (BLOCK_N, BLOCK_K,
num_warps, num_stages) is timed with CUDA events (triton.testing.do_bench, median), several weight copies
rotated so L2 does not hold them; the result is the achieved weight bandwidth against the measured copy
bandwidth, beside cuBLAS (bf16) and dequantize-free _scaled_mm is not applicable at M=1.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import triton
import triton.testing

from backends.engine.gemv import ROW_CONFIG, config, gemv, gemv_row

SHAPES = {"qkv": (6144, 4096), "o_proj": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
GRID = dict(BLOCK_N=(16, 32, 64), BLOCK_K=(256, 512), num_warps=(4, 8), num_stages=(3, 5))
ROW_GRID = dict(BLOCK_N=(8, 16, 32), BLOCK_K=(256, 512, 1024), num_warps=(4,), num_stages=(2, 4))


def copy_bandwidth() -> float:
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = triton.testing.do_bench(lambda: y.copy_(x), return_mode="median")
    return 2 * x.numel() / (ms * 1e-3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gemv_sweep.json")
    ap.add_argument("--fp8-only", action="store_true")
    a = ap.parse_args()
    bw = copy_bandwidth()
    rows = []
    for dtype in ("fp8", "bf16") if not a.fp8_only else ("fp8",):
        for name, (n, k) in SHAPES.items():
            copies = max(2, int(4 * 60e6 // (n * k)) + 1)       # rotate enough copies to exceed L2 4x
            ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
            scale = None
            if dtype == "fp8":
                ws = [w.to(torch.float8_e4m3fn) for w in ws]
                scale = torch.ones(n, device="cuda", dtype=torch.float32)
            x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
            nbytes = n * k * ws[0].element_size()
            it = itertools.cycle(ws)
            if dtype == "bf16":
                ms = triton.testing.do_bench(lambda: x @ next(it).t(), return_mode="median")
                rows.append(dict(dtype=dtype, op=name, impl="cublas", ms=ms, frac=nbytes / (ms * 1e-3) / bw))
            default = config(n, k, x.device, ws[0].element_size())
            for vals in itertools.product(*GRID.values()):
                cfg = dict(zip(GRID, vals))
                try:
                    ms = triton.testing.do_bench(lambda: gemv(x, next(it), cfg, scale), return_mode="median")
                except Exception as e:                   # out of shared memory for this tile: skip it
                    rows.append(dict(dtype=dtype, op=name, impl="triton", cfg=cfg, error=str(e)[:120]))
                    continue
                rows.append(dict(dtype=dtype, op=name, impl="triton", cfg=cfg, default=cfg == default, ms=ms,
                                 frac=nbytes / (ms * 1e-3) / bw))
            if dtype == "fp8":                           # the one-row kernel the engine uses at batch 1
                for vals in itertools.product(*ROW_GRID.values()):
                    cfg = dict(zip(ROW_GRID, vals))
                    ms = triton.testing.do_bench(lambda: gemv_row(x, next(it), scale, cfg), return_mode="median")
                    rows.append(dict(dtype=dtype, op=name, impl="row", cfg=cfg, default=cfg == ROW_CONFIG, ms=ms,
                                     frac=nbytes / (ms * 1e-3) / bw))
                best_row = max((r for r in rows if r["op"] == name and r["impl"] == "row"), key=lambda r: r["frac"])
                print(f"fp8 {name} row kernel: best {best_row['cfg']} {best_row['ms'] * 1e3:.1f} us = "
                      f"{best_row['frac']:.2f} of copy bw", flush=True)
            best = max((r for r in rows if r["op"] == name and r["dtype"] == dtype and "ms" in r
                        and r["impl"] == "triton"), key=lambda r: r["frac"])
            dflt = [r for r in rows if r["op"] == name and r["dtype"] == dtype and r.get("default")]
            print(f"{dtype} {name} {n}x{k}: best {best['cfg']} {best['ms'] * 1e3:.1f} us = {best['frac']:.2f} of copy bw;"
                  f" default {dflt[0]['frac'] if dflt else float('nan'):.2f}", flush=True)
    Path(a.out).write_text(json.dumps({"copy_bandwidth": bw, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
