"""Incremental server-sent-events decoder: events split on a blank line, `:` lines are comments,
the `data` lines of one event are joined with a newline."""
from __future__ import annotations

from collections.abc import Callable

EventSink = Callable[[bytes, float], None]


class SSEDecoder:
    __slots__ = ("_on_event", "_rest")

    def __init__(self, on_event: EventSink):
        self._on_event = on_event
        self._rest = b""

    def feed(self, data: bytes, t: float) -> None:
        """Every complete event in `data` gets the time stamp `t` of the read that completed it."""
        buf = self._rest + data if self._rest else data
        if b"\r" in buf:
            # A "\r" at the very end may pair with a "\n" in the next read; it stays in _rest, unchanged,
            # and is normalised on the next call.
            buf = buf.replace(b"\r\n", b"\n")
        events = buf.split(b"\n\n")
        self._rest = events.pop()
        on_event = self._on_event
        for event in events:
            # Fast path: the single `data: ...` line every OpenAI-compatible server sends.
            if event.startswith(b"data: ") and b"\n" not in event:
                on_event(event[6:], t)
                continue
            payload = _data_of(event)
            if payload is not None:
                on_event(payload, t)


def _data_of(event: bytes) -> bytes | None:
    data = []
    for line in event.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if name == b"data":
            data.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(data) if data else None
