"""LLMEngine: the offline API (add_request / step / generate) over scheduler + model runner.

add_request and abort_request may be called from any thread: they only queue a command, which the thread
calling step() applies at the start of its next step, so the scheduler is only ever touched by one thread.
"""
from __future__ import annotations

import itertools
import json
import time
from collections import deque
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

from .block_manager import BlockManager
from .config import EngineConfig, EngineError, SamplingParams
from .gc_clock import GcClock
from .model_runner import Launched, ModelRunner, log_json
from .scheduler import Scheduler
from .sequence import Sequence
from .workers import Workers

STEP_TIME_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PENDING_TOKEN = -1          # a sampled token not read back yet (async scheduling)


@dataclass
class _InFlight:
    handle: Launched | None
    sampled: list[tuple[Sequence, int]]     # (sequence, index of its placeholder token), in sample order
    record: dict | None                     # trace composition
    start: float                            # when its step() call began
    launched: float                         # when it was queued
    after: Launched | None = None           # the step in flight when this one was queued (async scheduling)


@dataclass
class RequestOutput:
    request_id: str
    new_token_ids: list[int]
    finished: bool
    finish_reason: str | None
    num_prompt_tokens: int
    num_output_tokens: int


@dataclass
class EngineStats:
    num_steps: int = 0
    prompt_tokens_total: int = 0          # prompt tokens fed (a preempted prompt counts again)
    generation_tokens_total: int = 0
    requests_finished_total: int = 0
    step_time_sum_s: float = 0.0
    step_time_bucket_counts: list[int] = field(default_factory=lambda: [0] * len(STEP_TIME_BUCKETS_S))

    def observe_step(self, seconds: float) -> None:
        self.num_steps += 1
        self.step_time_sum_s += seconds
        for i, bound in enumerate(STEP_TIME_BUCKETS_S):
            if seconds <= bound:
                self.step_time_bucket_counts[i] += 1


class LLMEngine:
    def __init__(self, config: EngineConfig):
        self.config = config
        self.workers = Workers(config) if config.tp > 1 else None
        if self.workers:
            log_json({"event": "tp_workers", "tp": config.tp, "pids": self.workers.pids})
        try:
            self.runner = ModelRunner(config, 0, self.workers and self.workers.port)
        except BaseException:
            if self.workers:
                self.workers.stop(timeout=0)
            raise
        self.max_model_len = self.runner.max_model_len
        self.block_manager = BlockManager(self.runner.num_kv_blocks, config.block_size)
        self.scheduler = Scheduler(self.block_manager, config.max_num_seqs, config.max_num_batched_tokens)
        self.eos_token_ids = set(config.eos_token_ids)
        self.seqs: dict[str, Sequence] = {}
        self._inbox: deque = deque()       # ("add", Sequence, time) | ("abort", request_id, time); atomic ops
        self._ids = itertools.count()
        self.stats = EngineStats()
        self._trace = open(config.trace_path, "a") if config.trace_path else None
        self._gc = GcClock() if self._trace else None
        # Async scheduling: the step launched by the last step() call, whose tokens the next call reads.
        self.async_scheduling = config.async_scheduling
        self._inflight: _InFlight | None = None
        self._last_done: float | None = None
        self._t_start = time.perf_counter()     # trace records' `start_s` counts from here
        self._arrivals_s: list[float] = []      # when the requests added since the last trace record came in
        # clock_origin_s: that origin on the host's monotonic clock (time.perf_counter), which a load generator
        # on the same host shares: its send times line up with the trace's steps.
        log_json({**self.runner.kv_info(), "load_time_s": round(self.runner.load_time_s, 3),
                  "clock_origin_s": self._t_start, "async_scheduling": config.async_scheduling})

    # ----------------------------------------------------------------------- requests
    def add_request(self, prompt_token_ids: Seq[int], params: SamplingParams | None = None,
                    request_id: str | None = None) -> str:
        """Validates and queues a request (raises EngineError with the reason); returns its id."""
        params = params or SamplingParams()
        ids = list(prompt_token_ids)
        vocab = self.config.model.vocab_size
        if not ids:
            raise EngineError("the prompt is empty")
        if not all(isinstance(t, int) and 0 <= t < vocab for t in ids):
            raise EngineError(f"prompt token ids must be integers in [0, {vocab})")
        if len(ids) + params.max_tokens > self.max_model_len:
            raise EngineError(f"prompt ({len(ids)} tokens) + max_tokens ({params.max_tokens}) exceeds the "
                              f"maximum model length {self.max_model_len}")
        request_id = request_id or f"req-{next(self._ids)}"
        self._inbox.append(("add", Sequence(request_id, ids, params), time.perf_counter()))
        return request_id

    def abort_request(self, request_id: str) -> None:
        self._inbox.append(("abort", request_id, time.perf_counter()))

    def has_unfinished(self) -> bool:
        return bool(self._inbox) or self.scheduler.has_work() or self._inflight is not None

    def _drain_inbox(self) -> list[RequestOutput]:
        outputs = []
        while self._inbox:
            kind, item, t = self._inbox.popleft()
            if kind == "add":
                if item.request_id in self.seqs:
                    raise EngineError(f"duplicate request id {item.request_id}")
                self.seqs[item.request_id] = item
                self.scheduler.add(item)
                if self._trace:
                    self._arrivals_s.append(round(t - self._t_start, 6))
            elif item in self.seqs:
                seq = self.seqs.pop(item)
                self.scheduler.finish(seq, "abort")
                while seq.token_ids[-1] == PENDING_TOKEN:     # tokens still in flight are dropped
                    seq.token_ids.pop()
                outputs.append(self._output(seq, [], seq.num_output_tokens))
        return outputs

    @staticmethod
    def _output(seq: Sequence, new_tokens: list[int], num_output_tokens: int) -> RequestOutput:
        return RequestOutput(seq.request_id, new_tokens, seq.finish_reason is not None, seq.finish_reason,
                             seq.num_prompt_tokens, num_output_tokens)

    # ----------------------------------------------------------------------- step
    def step(self) -> list[RequestOutput]:
        """Schedules and launches one batch, and returns the outputs of the batch that finished: this one, or
        under async scheduling the one launched by the previous call (its tokens are read while this one runs)."""
        t0 = time.perf_counter()
        outputs = self._drain_inbox()
        launched = None
        if self.scheduler.has_work():
            batch = self.scheduler.schedule()
            if batch.items:
                launched = self._launch(batch, t0)
        if not self.async_scheduling:
            self._inflight = launched
        if self._inflight is not None:
            outputs += self._resolve(self._inflight)
        self._inflight = launched if self.async_scheduling else None
        return outputs

    def _launch(self, batch, t0: float) -> "_InFlight":
        """Queues the batch on the runner and advances the sequences. A sequence fed to its end gets a
        placeholder for the token it samples, filled in by _resolve; until then the next step feeds that token
        from the device (its row in the in-flight step's sample order)."""
        prev = self._inflight
        feed = {seq: j for j, (seq, idx) in enumerate(prev.sampled) if seq.num_computed_tokens == idx} if prev else None
        t1 = time.perf_counter()
        handle = self.runner.launch(batch, feed)
        sampled = []
        for seq, n in batch.items:
            fed_to_end = seq.num_computed_tokens + n == seq.num_tokens
            seq.num_computed_tokens += n
            if seq.num_computed_tokens <= seq.num_prompt_tokens:
                self.stats.prompt_tokens_total += n
            if fed_to_end:
                seq.token_ids.append(PENDING_TOKEN)
                sampled.append((seq, seq.num_tokens - 1))
        record = self._trace_record(batch) if self._trace else None
        return _InFlight(handle, sampled, record, t0, t1, prev.handle if prev else None)

    def _resolve(self, step: "_InFlight") -> list[RequestOutput]:
        """Reads a launched step's tokens into its sequences; finishes those that reached max_tokens or stopped.
        A sequence finished or aborted since the step was launched (async scheduling) drops its token."""
        outputs = []
        for (seq, idx), token in zip(step.sampled, self.runner.collect(step.handle)):
            if seq.finish_reason is not None:
                continue
            seq.token_ids[idx] = token
            self.stats.generation_tokens_total += 1
            if idx + 1 - seq.num_prompt_tokens >= seq.params.max_tokens:
                self.scheduler.finish(seq, "length")
            elif token in self.eos_token_ids and not seq.params.ignore_eos:
                del seq.token_ids[idx + 1:]          # a later step's placeholder, whose token is dropped
                self.scheduler.finish(seq, "stop")
            if seq.finish_reason:
                del self.seqs[seq.request_id]
                self.stats.requests_finished_total += 1
            outputs.append(self._output(seq, [token], idx + 1 - seq.num_prompt_tokens))
        # A step's time: from its start to its tokens, or under async scheduling from the end of the step before
        # (steps overlap: each is charged the interval between completions). The host reads a step's tokens only
        # after launching the next, so on CUDA that interval is taken from the device's own events: a host clock
        # would charge the next launch (several ms for a prefill) to this step and take it from the next.
        now = time.perf_counter()
        start = step.start if self._last_done is None or not self.async_scheduling else max(step.start, self._last_done)
        device_s = self._device_interval_s(step) if self.async_scheduling else None
        if device_s is not None:
            start = now - device_s
        self._last_done = now
        self.stats.observe_step(now - start)
        if step.record is not None:
            self._write_trace(step.record, start - self._t_start, now - start, now - step.launched)
        return outputs

    @staticmethod
    def _device_interval_s(step: "_InFlight") -> float | None:
        """Device time from the end of the step that was in flight when this one was queued (else from this
        one's start) to this one's end; None without timing events (CPU, or a step that samples nothing)."""
        end = step.handle.event if step.handle is not None else None
        ref = step.after.event if step.after is not None and step.after.event is not None else (
            step.handle.begin if step.handle is not None else None)
        if end is None or ref is None:
            return None
        return ref.elapsed_time(end) / 1e3

    def _trace_record(self, batch) -> dict:
        """The composition of a launched batch (its sequences have advanced by this step's tokens)."""
        pre = [(seq, n) for seq, n in batch.items if n > 1]
        dec_ctx = [seq.num_computed_tokens for seq, n in batch.items if n == 1]   # after this step's token
        return {"num_prefill_tokens": sum(n for _, n in pre), "num_prefill_seqs": len(pre),
                "prefill_query_lens": [n for _, n in pre],
                "prefill_context_lens": [seq.num_computed_tokens for seq, _ in pre],
                "num_decode_seqs": len(dec_ctx), "decode_context_len_sum": sum(dec_ctx),
                "decode_context_len_max": max(dec_ctx, default=0),
                "cuda_graph_batch_size": self.runner.last_graph_bs,
                "piecewise_tokens": self.runner.last_piecewise_size, "whole_graph": self.runner.last_whole_graph,
                "num_preempted": batch.num_preempted}

    def _write_trace(self, composition: dict, start_s: float, step_s: float, model_s: float) -> None:
        # start_s: gaps between one step's end and the next one's start are time the engine spent outside
        # step() (idle, or the server's own work), which a simulator of back-to-back steps must account for.
        record = {"step": self.stats.num_steps, "start_s": round(start_s, 6), "time_s": round(step_s, 6),
                  "model_time_s": round(model_s, 6), **composition,
                  # garbage collection since the last record (any thread: it holds the GIL, stalling the step)
                  "gc_s": round(self._gc.take(), 6), "arrivals_s": self._arrivals_s}
        self._arrivals_s = []
        self._trace.write(json.dumps(record) + "\n")
        self._trace.flush()

    # ----------------------------------------------------------------------- offline
    def generate(self, prompts: list[list[int]],
                 params: SamplingParams | list[SamplingParams] | None = None) -> list[list[int]]:
        """Generated token ids per prompt, in order."""
        params_list = params if isinstance(params, list) else [params] * len(prompts)
        ids = [self.add_request(p, sp) for p, sp in zip(prompts, params_list)]
        results: dict[str, list[int]] = {i: [] for i in ids}
        while self.has_unfinished():
            for out in self.step():
                if out.request_id in results:
                    results[out.request_id] += out.new_token_ids
        return [results[i] for i in ids]

    def close(self) -> None:
        if self.workers:
            self.workers.stopping = True
            self.runner.shutdown()
            self.workers.stop()
            self.workers = None
        if self._trace:
            self._trace.close()
            self._trace = None
            self._gc.close()
