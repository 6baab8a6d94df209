"""A no-op OpenAI-compatible streaming server with known token timing, for self-checks.

    python -m backends.harness.noop_server --port N --tokens K --itl-ms X --ttft-ms Y

Each streamed completion sends its first token message TTFT after the request arrived, then one every
ITL (absolute times, so timer jitter never accumulates), then a usage event and `data: [DONE]`.
`max_tokens` in the request wins over --tokens. Every token message carries "t_send", the server's
perf_counter just before the write; on Linux that clock is system-wide, so a client in another
process can measure its own time-stamping error exactly.

Written on raw asyncio protocols: it must outrun the client it checks on one core.
"""
from __future__ import annotations

import argparse
import asyncio
import json
from time import perf_counter

_COMMON = b"Server: plan-noop\r\n"
_SSE_HEAD = (b"HTTP/1.1 200 OK\r\n" + _COMMON + b"Content-Type: text/event-stream\r\n"
             b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
_MODEL = "noop"


def _chunk(payload: bytes) -> bytes:
    """One SSE event as one HTTP chunk."""
    event = b"data: " + payload + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(event), event)


def _json_response(status: str, obj, content_type: bytes = b"application/json") -> bytes:
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return (b"HTTP/1.1 " + status.encode() + b"\r\n" + _COMMON + b"Content-Type: " + content_type +
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class NoopConfig:
    def __init__(self, tokens: int, ttft_s: float, itl_s: float):
        self.tokens = tokens
        self.ttft_s = ttft_s
        self.itl_s = itl_s
        self.served = 0


class _Stream:
    """The timed token messages of one streamed completion."""

    def __init__(self, proto: _NoopProtocol, n_tokens: int, prompt_tokens: int, t_arrival: float,
                 chat: bool):
        self.proto = proto
        self.n_tokens = n_tokens
        self.prompt_tokens = prompt_tokens
        self.sent = 0
        self.chat = chat
        self.t_arrival = t_arrival
        self.id = f"cmpl-noop-{id(self):x}"

    def start(self) -> None:
        cfg = self.proto.cfg
        loop = self.proto.loop
        self.proto.transport.write(_SSE_HEAD)
        if cfg.ttft_s == 0 and cfg.itl_s == 0:
            self._send(self.n_tokens)        # everything in one write
        else:
            loop.call_at(self._due(0), self._tick)

    def _due(self, i: int) -> float:
        # loop.time() and perf_counter() are both CLOCK_MONOTONIC under asyncio and uvloop alike,
        # but convert anyway: loop time is what call_at takes.
        cfg = self.proto.cfg
        offset = self.t_arrival - perf_counter() + self.proto.loop.time()
        return offset + cfg.ttft_s + i * cfg.itl_s

    def _tick(self) -> None:
        self._send(1)
        if self.sent < self.n_tokens:
            self.proto.loop.call_at(self._due(self.sent), self._tick)

    def _send(self, count: int) -> None:
        if self.proto.transport.is_closing():
            return
        parts = []
        for _ in range(count):
            self.sent += 1
            last = self.sent == self.n_tokens
            choice = ({"index": 0, "delta": {"content": " tok"}, "finish_reason": "length" if last else None}
                      if self.chat else
                      {"index": 0, "text": " tok", "logprobs": None, "finish_reason": "length" if last else None})
            parts.append(_chunk(json.dumps({
                "id": self.id, "object": "chat.completion.chunk" if self.chat else "text_completion",
                "model": _MODEL, "choices": [choice], "usage": None, "t_send": perf_counter(),
            }).encode()))
        if self.sent == self.n_tokens:
            usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.n_tokens,
                     "total_tokens": self.prompt_tokens + self.n_tokens}
            parts.append(_chunk(json.dumps({"id": self.id, "model": _MODEL, "choices": [], "usage": usage}).encode()))
            parts.append(_chunk(b"[DONE]"))
            parts.append(b"0\r\n\r\n")
            self.proto.cfg.served += 1
        self.proto.transport.write(b"".join(parts))


class _NoopProtocol(asyncio.Protocol):
    def __init__(self, cfg: NoopConfig):
        self.cfg = cfg
        self.buf = bytearray()
        self.loop = asyncio.get_running_loop()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        t_arrival = perf_counter()
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4:end + 4 + length])
            del self.buf[:end + 4 + length]
            method, _, rest = head.partition(" ")
            self._handle(method, rest.split(" ", 1)[0], body, t_arrival)

    def _handle(self, method: str, path: str, body: bytes, t_arrival: float) -> None:
        write = self.transport.write
        if path == "/health":
            write(_json_response("200 OK", b""))
        elif path == "/v1/models":
            write(_json_response("200 OK", {"object": "list", "data": [{"id": _MODEL, "object": "model"}]}))
        elif path == "/metrics":
            write(_json_response("200 OK", f"noop_requests_served {self.cfg.served}\n".encode(), b"text/plain"))
        elif method == "POST" and path in ("/v1/completions", "/v1/chat/completions"):
            self._complete(body, path.endswith("chat/completions"), t_arrival)
        else:
            write(_json_response("404 Not Found", {"error": {"message": f"no route {method} {path}"}}))

    def _complete(self, body: bytes, chat: bool, t_arrival: float) -> None:
        try:
            req = json.loads(body)
        except ValueError:
            self.transport.write(_json_response("400 Bad Request", {"error": {"message": "body is not JSON"}}))
            return
        n_tokens = int(req.get("max_tokens") or self.cfg.tokens)
        prompt = req.get("messages") if chat else req.get("prompt", "")
        prompt_tokens = len(prompt) if isinstance(prompt, list) else len(str(prompt).split())
        if req.get("stream"):
            _Stream(self, n_tokens, prompt_tokens, t_arrival, chat).start()
            return
        self.cfg.served += 1
        self.transport.write(_json_response("200 OK", {
            "id": "cmpl-noop", "object": "text_completion", "model": _MODEL,
            "choices": [{"index": 0, "text": " tok" * n_tokens, "finish_reason": "length"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n_tokens,
                      "total_tokens": prompt_tokens + n_tokens}}))


async def serve(host: str, port: int, cfg: NoopConfig) -> None:
    server = await asyncio.get_running_loop().create_server(lambda: _NoopProtocol(cfg), host, port, backlog=4096)
    print(f"noop server on http://{host}:{port} tokens={cfg.tokens} ttft={cfg.ttft_s * 1e3:g}ms "
          f"itl={cfg.itl_s * 1e3:g}ms", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8199)
    ap.add_argument("--tokens", type=int, default=16, help="tokens per response when max_tokens is absent")
    ap.add_argument("--ttft-ms", type=float, default=0.0)
    ap.add_argument("--itl-ms", type=float, default=0.0)
    args = ap.parse_args(argv)
    cfg = NoopConfig(args.tokens, args.ttft_ms / 1e3, args.itl_ms / 1e3)
    try:
        import uvloop  # optional: a faster loop, so the server stays far from being the bottleneck
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(serve(args.host, args.port, cfg))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
