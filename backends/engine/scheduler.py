"""Continuous batching with chunked prefill, a token budget per step, and preemption by recompute.

Every step hands each scheduled sequence a number of tokens to feed: 1 for a decode, up to the remaining
budget for a prompt (a chunk). Running sequences go first, in arrival order, so decodes are never starved
by new prompts; new sequences fill what is left of the budget. When the cache runs out, the most recently
admitted running sequence is preempted: its blocks are freed and it goes back to the head of the queue to
be recomputed later, so no accepted request is ever dropped.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .block_manager import BlockManager, cdiv
from .sequence import Sequence, Status


@dataclass
class ScheduledBatch:
    items: list[tuple[Sequence, int]]   # (sequence, tokens fed this step); prefill chunks first, then decodes
    num_preempted: int = 0

    @property
    def num_tokens(self) -> int:
        return sum(n for _, n in self.items)


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def fits_alone(self, num_tokens: int) -> bool:
        return cdiv(num_tokens, self.block_manager.block_size) <= self.block_manager.num_blocks

    def schedule(self) -> ScheduledBatch:
        budget = self.max_num_batched_tokens
        scheduled: list[tuple[Sequence, int]] = []
        preempted = 0
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            if seq.num_output_tokens >= seq.params.max_tokens:
                i += 1          # its last token is still in flight (async scheduling): it takes no more steps
                continue
            n = min(seq.num_tokens - seq.num_computed_tokens, budget)
            while not self.block_manager.can_allocate(seq, seq.num_computed_tokens + n):
                victim = self.running.pop()          # the latest admitted: least work lost
                self._preempt(victim)
                preempted += 1
                if victim is seq:
                    break
            else:
                self.block_manager.allocate(seq, seq.num_computed_tokens + n)
                scheduled.append((seq, n))
                budget -= n
                i += 1
        # Admit new sequences only in a step without preemption: otherwise they would evict each other.
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs and not preempted:
            seq = self.waiting[0]
            n = min(seq.num_tokens - seq.num_computed_tokens, budget)
            if not self.block_manager.can_allocate(seq, n):
                break
            self.waiting.popleft()
            self.block_manager.allocate(seq, n)
            seq.status = Status.RUNNING
            self.running.append(seq)
            scheduled.append((seq, n))
            budget -= n
        self.num_preemptions += preempted
        # The runner wants prefill chunks (more than one token) first, then single-token decodes.
        scheduled.sort(key=lambda item: item[1] == 1)
        return ScheduledBatch(scheduled, preempted)

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence, reason: str) -> None:
        """Frees a sequence's blocks and removes it, whether it ran to its end or was cancelled."""
        if seq.status == Status.RUNNING:
            self.running.remove(seq)
        elif seq.status == Status.WAITING:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        seq.status = Status.FINISHED
        seq.finish_reason = reason

    def num_kv_blocks_used(self) -> int:
        return self.block_manager.num_blocks - self.block_manager.num_free_blocks
