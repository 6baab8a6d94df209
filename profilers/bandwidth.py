"""Memory bandwidth: device-to-device copies over transfer sizes, counting bytes read plus written."""
from __future__ import annotations

from profilers.context import BenchContext
from profilers.timing import rotation_sets


def measure_copy(ctx: BenchContext, copy_bytes: int) -> dict:
    import torch

    elements = max(1, copy_bytes // 2)              # bf16 elements
    moved = 2 * 2 * elements                        # read source + write destination
    # Small copies need many distinct buffers to stay out of L2; they are cheap, so allow plenty.
    n_sets = rotation_sets(moved, ctx.cache_bytes, max_sets=256)
    src = [torch.randn(elements, dtype=torch.bfloat16, device=ctx.device) for _ in range(n_sets)]
    dst = [torch.empty_like(s) for s in src]
    timing = ctx.timer.time(lambda i: dst[i].copy_(src[i]), n_sets)
    return {"copy_bytes": 2 * elements, "bytes_moved": moved, "seconds": timing.seconds,
            "bytes_per_s": moved / timing.seconds, "timing": timing.mode}
