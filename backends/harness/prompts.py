"""Where requests come from: synthetic prompts (token ids or text) of sampled lengths, or a
ShareGPT-format JSON file."""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner.arrivals import sample_lengths   # one sampler: the simulator and the load draw alike
from backends.harness.tokenizer import Tokenizer
from planner.errors import UsageError
from planner.schemas import LengthDist

_BLOCK = 1024
FIRST_ID = 10   # ids below this are special tokens (bos, eos, pad, unk) in every common vocabulary

# Text prompts: common short words, most of them one token in any BPE vocabulary.
_WORDS = ["the", "of", "and", "to", "in", "is", "for", "on", "that", "with", "as", "it", "by", "at", "from", "be",
          "this", "are", "was", "an", "or", "have", "not", "but", "all", "can", "more", "one", "new", "out", "time",
          "about", "up", "who", "may", "over", "also", "use", "two", "will", "other"]


@dataclass(slots=True)
class RequestSpec:
    prompt: list[int] | str
    prompt_len: int        # tokens, as the client counts them (the server's usage count may differ)
    output_len: int        # max_tokens


def synthetic_requests(input_tokens: LengthDist, output_tokens: LengthDist, *, prompt_kind: str = "ids",
                       vocab_size: int = 1000, seed: int = 0,
                       tokenizer: Tokenizer | None = None) -> Iterator[RequestSpec]:
    """Endless requests. Token-id prompts are exact; text prompts are random common words, one
    word per token, counted with `tokenizer` when there is one (else the word count stands)."""
    rng = np.random.default_rng(seed)
    if prompt_kind == "ids" and vocab_size <= FIRST_ID:
        raise UsageError(f"vocab size {vocab_size} is too small for random token ids")
    while True:
        ins = sample_lengths(input_tokens, _BLOCK, rng)
        outs = sample_lengths(output_tokens, _BLOCK, rng)
        # One draw of ids per block, sliced per request: a NumPy call per request costs more than the slice.
        # Each slice becomes a list when its request is drawn: the whole block at once would hold the
        # runner's event loop for milliseconds.
        ids = rng.integers(FIRST_ID, vocab_size, int(ins.sum())) if prompt_kind == "ids" else None
        start = 0
        for n_in, n_out in zip(ins.tolist(), outs.tolist()):
            if prompt_kind == "ids":
                yield RequestSpec(ids[start:start + n_in].tolist(), n_in, n_out)
                start += n_in
            else:
                text = " ".join(_WORDS[i] for i in rng.integers(0, len(_WORDS), n_in).tolist())
                n_text = tokenizer.count(text) if tokenizer else n_in
                yield RequestSpec(text, n_text, n_out)


def read_sharegpt(path: str | Path, *, tokenizer: Tokenizer | None = None,
                  output_len: int | None = None) -> list[RequestSpec]:
    """First human turn as prompt, the reply's length as max_tokens (or `output_len`). Read whole, before any
    server starts: a missing or malformed file is a usage error naming it, not a run of zero requests.
    Without a tokenizer, lengths are estimated at 4 characters per token."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read ShareGPT file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"ShareGPT file {path} is not valid JSON: {exc}") from None
    pairs = []
    for item in data if isinstance(data, list) else []:
        turns = (item.get("conversations") or item.get("conversation") or []) if isinstance(item, dict) else []
        if (isinstance(turns, list) and len(turns) >= 2 and all(isinstance(t, dict) for t in turns[:2])
                and isinstance(turns[0].get("value"), str) and isinstance(turns[1].get("value"), str)
                and turns[0]["value"] and turns[1]["value"]):
            pairs.append((turns[0]["value"], turns[1]["value"]))
    if not pairs:
        raise UsageError(f"ShareGPT file {path}: no conversation with a prompt and a reply (expected a JSON list of "
                         '{"conversations": [{"value": PROMPT}, {"value": REPLY}, ...]})')
    count = tokenizer.count if tokenizer else (lambda text: max(len(text) // 4, 1))
    return [RequestSpec(prompt, count(prompt), output_len or count(reply)) for prompt, reply in pairs]


def shuffled_cycle(specs: list[RequestSpec], seed: int = 0) -> Iterator[RequestSpec]:
    """`specs` shuffled with `seed`, cycled without end."""
    order = np.random.default_rng(seed).permutation(len(specs))
    while True:
        for i in order.tolist():
            yield specs[i]
