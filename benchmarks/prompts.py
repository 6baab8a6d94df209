"""Prompts for the engine benchmarks: random token ids, as served requests are. A prompt of one repeated id keeps
every row of every GEMM alike, which draws less power: Llama-3.1-8B prefills of 1,024 / 4,096 tokens ran 11% / 15%
faster so on an H200 (`engine_probes.py --only rows`)."""
from __future__ import annotations

import random

_RNG = random.Random(0)     # seeded: a script's prompts are the same from run to run


def random_ids(vocab_size: int, length: int, rng: random.Random | None = None) -> list[int]:
    return [(rng or _RNG).randrange(vocab_size) for _ in range(length)]
