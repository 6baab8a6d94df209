"""One request's state as the scheduler and the model runner see it."""
from __future__ import annotations

import enum

from .config import SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    def __init__(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams):
        self.request_id = request_id
        self.token_ids = list(prompt_token_ids)      # prompt, then generated tokens
        self.num_prompt_tokens = len(prompt_token_ids)
        self.params = params
        self.status = Status.WAITING
        # Tokens whose K/V are in the cache. A step feeds token_ids[num_computed_tokens:] (or a chunk of it);
        # once all are fed it samples the next token. Preemption resets it to 0 (recompute).
        self.num_computed_tokens = 0
        self.block_table: list[int] = []
        self.finish_reason: str | None = None      # "length" | "stop" | "abort"
        self.generator = None                          # torch.Generator of a seeded sampled request (runner)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return self.num_tokens - self.num_prompt_tokens
