"""Throwaway probe, kept with its result (`rows_persistent.json`): the mixed graphs' decode attention with a
persistent grid against the decode graphs' 3D grid, with and without a 128-register cap.

It ran against a variant of backends/engine/attention.py that was measured and dropped (not kept in the tree; see
BENCHMARKS.md, nineteenth session): in ROWS_ON_DEVICE mode each program walked the (sequence, kv head, split) items
the count implies (`tl.range(program_id, items, num_programs, num_stages=1)`), on a grid of
min(items for the most decodes, 4 x SMs); the merge likewise on min(rows x heads, 16 x SMs). Run as

  PYTHONPATH=. python3 benchmarks/results/rowsgrid_H200/rows_persistent.py OUT.json
"""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, "benchmarks")
from engine_probes import copy_bandwidth, decode_sets, decode_timer, time_checked  # noqa: E402

from backends.engine import attention as A  # noqa: E402
from profilers.sweeps import AttentionShape  # noqa: E402


def rows_op(sets, dec, out, launch):
    def op(i):
        saved, A.DECODE_LAUNCH = A.DECODE_LAUNCH, launch
        try:
            A.decode_attention_rows(*sets[i], 0.088, dec, out)
        finally:
            A.DECODE_LAUNCH = saved
    return op


def time_batch(batch, timer, shape, copy_bw):
    sets, kv_bytes = decode_sets(batch, 1025, shape)
    sets = [(q, kc, vc, bt, cl.to(torch.int64)) for q, kc, vc, bt, cl in sets]
    out = torch.empty(batch, 32, 128, dtype=torch.bfloat16, device="cuda")
    splits = A.decode_num_splits(batch, 8, torch.device("cuda"))
    dec = A.DecodeRows.allocate(256, 32, 8, 128, torch.device("cuda"),       # sized as the engine's graphs
                                torch.tensor([batch, 0], dtype=torch.int64, device="cuda"))
    variants = {"grid3d": lambda i: A.decode_attention_triton(*sets[i], 0.088, splits, out=out),
                "rows_persistent": rows_op(sets, dec, out, {"num_warps": 4}),
                "rows_persistent_maxnreg128": rows_op(sets, dec, out, {"num_warps": 4, "maxnreg": 128})}
    rows = time_checked(timer, variants, len(sets), out, {"batch": batch}, kv_bytes, copy_bw)
    return rows, [dec.num_programs, dec.merge_programs]


copy_bw = copy_bandwidth()
timer, shape = decode_timer(), AttentionShape(32, 8, 128)
rows = []
for batch in (8, 32, 64, 128, 256):
    batch_rows, programs = time_batch(batch, timer, shape, copy_bw)
    rows += batch_rows
    torch.cuda.empty_cache()
for name, fn in (("decode", A._decode_kernel), ("merge", A._decode_merge_kernel)):
    for k in fn.device_caches[torch.cuda.current_device()][0].values():
        k._init_handles()
        print(name, "regs", k.n_regs, "spills", k.n_spills)
Path(sys.argv[1]).write_text(json.dumps({"copy_bw": copy_bw, "programs": programs, "rows": rows}, indent=1))
