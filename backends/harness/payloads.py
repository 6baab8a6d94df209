"""Request bodies for OpenAI-compatible completion endpoints, as metrics.md prescribes."""
from __future__ import annotations

import json
from collections.abc import Callable

from backends.harness.prompts import RequestSpec


def body_maker(model: str, *, chat: bool = False, temperature: float = 0.0, ignore_eos: bool = True,
               extra: dict | None = None) -> Callable[[RequestSpec], bytes]:
    """Streaming with usage in the last event, max_tokens = the sampled output length, an explicit
    temperature, and ignore_eos (random weights never stop sensibly)."""
    common = {"model": model, "temperature": temperature, "stream": True,
              "stream_options": {"include_usage": True}, "ignore_eos": ignore_eos, **(extra or {})}
    dumps = json.JSONEncoder(separators=(",", ":")).encode

    def make(spec: RequestSpec) -> bytes:
        if chat:   # chat takes text only; the CLI refuses token-id prompts with --chat
            body = {**common, "messages": [{"role": "user", "content": spec.prompt}], "max_tokens": spec.output_len}
        else:
            body = {**common, "prompt": spec.prompt, "max_tokens": spec.output_len}
        return dumps(body).encode()

    return make
