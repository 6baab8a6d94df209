"""How long a full garbage collection takes in the engine server's process, before and after the start-up
freeze (backends/engine/gc_clock.py): the stall a collection puts on every request in flight.

    python benchmarks/bench_gc.py [--repeat 3]

Imports what `plan serve` imports (torch, aiohttp, the engine and server), builds the tiny model's engine on
the CPU, then times gc.collect() `--repeat` times, freezes, and times it again. A GPU process holds more
objects (CUDA graphs, Triton kernels), so there a collection takes at least this long.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed_collections(repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        gc.collect()
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from backends.engine import server  # noqa: F401 - what the server process holds
    from backends.engine.config import TINY, EngineConfig
    from backends.engine.engine import LLMEngine
    from backends.engine.gc_clock import freeze_startup

    engine = LLMEngine(EngineConfig(model=TINY, device="cpu", dtype="fp32", num_kv_blocks=64, max_model_len=256))
    objects = len(gc.get_objects())
    before = timed_collections(args.repeat)
    freeze_startup()
    after = timed_collections(args.repeat)
    engine.close()
    result = {"objects": objects, "full_collection_s": statistics.median(before),
              "after_freeze_s": statistics.median(after), "python": sys.version.split()[0]}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
