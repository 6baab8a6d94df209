"""What one request measured: the raw time stamps and counts, filled in as its stream is decoded.

Derived metrics (TTFT, ITL, TPOT...) are computed later by metrics.py, from these raw fields only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

_decode = json.JSONDecoder().decode


@dataclass(slots=True)
class RequestRecord:
    index: int                        # position in the run; warm-up requests are not recorded
    prompt_len: int                   # tokens the client meant to send
    output_len: int                   # max_tokens asked for
    t_scheduled: float = 0.0          # perf_counter time the arrival process chose
    t_dispatch: float = 0.0           # when the client got round to it, before the concurrency gate
    t_start: float = 0.0              # just before sending, after the gate (metrics.md `t_start`)
    t_end: float = 0.0                # response complete, failed or cancelled
    status: int | None = None         # HTTP status
    error: str | None = None
    token_times: list[float] = field(default_factory=list)   # one per token message
    t_first_content: float | None = None                      # first token message with non-empty text
    text_parts: list[str] = field(default_factory=list)
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None
    done: bool = False                                        # saw `data: [DONE]`
    # The no-op server stamps each token message with its perf_counter send time ("t_send");
    # CLOCK_MONOTONIC is shared by all processes on the host, so receive - send is the client's error.
    server_send_times: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """metrics.md: HTTP 200 and at least one token message, and nothing went wrong."""
        return self.status == 200 and self.error is None and bool(self.token_times)

    def on_event(self, payload: bytes, t: float) -> None:
        """One SSE `data` payload, read at perf_counter time t."""
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            obj = _decode(payload.decode())   # str input skips json.loads' encoding detection
        except (ValueError, UnicodeDecodeError):
            self.error = f"malformed event JSON: {payload[:120]!r}"
            return
        if not isinstance(obj, dict):
            return
        choices = obj.get("choices")
        if choices:
            self.token_times.append(t)
            choice = choices[0]
            text = choice.get("text")
            if text is None:
                delta = choice.get("delta")   # chat completions
                text = delta.get("content") if delta else None
            if text:
                if self.t_first_content is None:
                    self.t_first_content = t
                self.text_parts.append(text)
            stamp = obj.get("t_send")
            if stamp is not None:
                self.server_send_times.append(stamp)
        usage = obj.get("usage")
        if usage:
            self.usage_prompt_tokens = usage.get("prompt_tokens")
            self.usage_completion_tokens = usage.get("completion_tokens")
        error = obj.get("error")
        if error:
            # vLLM reports errors met mid-stream as an event, after the 200 status line.
            self.error = f"server error event: {json.dumps(error)[:300]}"
