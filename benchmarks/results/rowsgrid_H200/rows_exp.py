"""Throwaway probe, kept with its result: why the whole-forward graphs' decode attention (a flat grid sized for the
most decodes, the count read on the device) runs slower than the decode graphs' 3D grid.

  PYTHONPATH=. python3 benchmarks/results/rowsgrid_H200/rows_exp.py OUT.json      # repository root, one GPU
"""
import importlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, "benchmarks")
from engine_probes import copy_bandwidth, decode_sets, decode_timer, time_checked  # noqa: E402

from backends.engine import attention as A  # noqa: E402
from profilers.sweeps import AttentionShape  # noqa: E402

# A copy of the kernel whose count-on-the-device mode takes (sequence, kv head, split) from a 3D grid.
src = (Path("backends/engine/attention.py").read_text()
       .replace("from .config", "from backends.engine.config").replace("from .kernels", "from backends.engine.kernels"))
old = """            pid = tl.program_id(0)
            b = pid // (num_kv_heads * num_splits)
            kvh = pid // num_splits % num_kv_heads
            split = pid % num_splits
"""
assert old in src
Path("/tmp/att_c.py").write_text(src.replace(old, """            b = tl.program_id(0)
            kvh = tl.program_id(1)
            split = tl.program_id(2)
"""))
sys.path.insert(0, "/tmp")
C = importlib.import_module("att_c")


def launch_rows(mod, grid, q, kc, vc, bt, cl, dec, out):
    """The count-on-the-device decode kernel on `grid`, without the merge (one split at these batches)."""
    H, D = q.shape[1], q.shape[2]
    KVH, bs = kc.shape[2], kc.shape[1]
    mod._decode_kernel[grid](
        q, kc, vc, bt, cl, out, dec.part_o, dec.part_ml, dec.rows, dec.splits, 0.088 * 1.4427, 1.0,
        q.stride(0), q.stride(1), kc.stride(0), kc.stride(1), kc.stride(2), bt.stride(0), out.stride(0),
        out.stride(1), H, KVH, GROUP=H // KVH, BLOCK_G=16, HEAD_DIM=D, BLOCK_D=128, BLOCK_SIZE=bs, TILE=64, TAIL=16,
        NUM_SPLITS=dec.max_splits, KV_FP8=False, ROWS_ON_DEVICE=True, num_warps=4)


def time_batch(batch, timer, shape, copy_bw):
    sets, kv_bytes = decode_sets(batch, 1025, shape)
    sets = [(q, kc, vc, bt, cl.to(torch.int64)) for q, kc, vc, bt, cl in sets]     # int64 lengths, as the engine
    out = torch.empty(batch, 32, 128, dtype=torch.bfloat16, device="cuda")
    splits = A.decode_num_splits(batch, 8, torch.device("cuda"))
    dec = A.DecodeRows.allocate(batch, 32, 8, 128, torch.device("cuda"),
                                torch.tensor([batch, 0], dtype=torch.int64, device="cuda"))
    variants = {
        "grid3d": lambda i: A.decode_attention_triton(*sets[i], 0.088, splits, out=out),
        "rows_flat_sized_for_max": lambda i: A.decode_attention_rows(*sets[i], 0.088, dec, out),
        "rows_flat_exact": lambda i: launch_rows(A, (batch * 8 * splits,), *sets[i], dec, out),
        "rows_3d_exact": lambda i: launch_rows(C, (batch, 8, splits), *sets[i], dec, out),
    }
    return time_checked(timer, variants, len(sets), out, {"batch": batch}, kv_bytes, copy_bw)


copy_bw = copy_bandwidth()
timer, shape = decode_timer(), AttentionShape(32, 8, 128)
rows = []
for batch in (64, 128, 256):
    rows += time_batch(batch, timer, shape, copy_bw)
    torch.cuda.empty_cache()
Path(sys.argv[1]).write_text(json.dumps({"copy_bw": copy_bw, "rows": rows}, indent=1))
