"""A lean HTTP/1.1 client for streamed completions: asyncio protocols, keep-alive pooling.

Why not aiohttp: at thousands of short streamed requests per second its per-chunk coroutine and
object overhead makes the client the bottleneck on a small machine. Here each read is handled in
`data_received`, time-stamped first thing, and decoded in place (HTTP framing -> SSE -> record),
with no task switch per chunk.
"""
from __future__ import annotations

import asyncio
import ssl
from time import perf_counter
from urllib.parse import urlsplit

from backends.harness.http_parse import ProtocolError, ResponseParser
from backends.harness.record import RequestRecord
from backends.harness.sse import SSEDecoder

_ERROR_BODY_BYTES = 2048   # enough of a non-200 body to say what went wrong


class _Exchange:
    """One request/response on a connection: where the body goes and how it ends."""

    __slots__ = ("body", "parser", "sse", "waiter")

    def __init__(self, waiter: asyncio.Future, record: RequestRecord | None):
        self.parser = ResponseParser(self._on_body)
        self.sse = SSEDecoder(record.on_event) if record is not None else None
        self.body = bytearray()
        self.waiter = waiter

    def _on_body(self, data: bytes, t: float) -> None:
        if self.sse is not None and self.parser.status == 200:
            self.sse.feed(data, t)
        elif self.sse is None or len(self.body) < _ERROR_BODY_BYTES:
            self.body += data

    def finish(self, exc: BaseException | None) -> None:
        if not self.waiter.done():
            if exc is None:
                self.waiter.set_result(None)
            else:
                self.waiter.set_exception(exc)


class _Connection(asyncio.Protocol):
    def __init__(self):
        self.transport: asyncio.Transport | None = None
        self.exchange: _Exchange | None = None
        self.closed = False
        self.reused = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        t = perf_counter()   # first thing: the time stamp is when the bytes were read
        exchange = self.exchange
        if exchange is None:
            self.transport.close()   # bytes nobody asked for: the connection is not trustworthy
            return
        try:
            exchange.parser.feed(data, t)
        except (ProtocolError, ValueError) as exc:
            self.closed = True
            self.transport.close()
            exchange.finish(ProtocolError(str(exc)))
            return
        if exchange.parser.complete:
            self.exchange = None
            if not exchange.parser.keep_alive:
                self.closed = True
                self.transport.close()
            exchange.finish(None)

    def connection_lost(self, exc):
        self.closed = True
        exchange, self.exchange = self.exchange, None
        if exchange is None:
            return
        exchange.parser.feed_eof()
        if exchange.parser.complete:
            exchange.finish(None)
        elif exchange.parser.status is None:
            exchange.finish(ConnectionResetError(f"connection closed before a response{_cause(exc)}"))
        else:
            exchange.finish(ConnectionResetError(f"stream broken: connection closed mid-response{_cause(exc)}"))

    def timeout(self, timeout_s: float) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.finish(TimeoutError(f"request timed out after {timeout_s:g} s"))
        self.closed = True
        self.transport.abort()


def _cause(exc: BaseException | None) -> str:
    return f" ({exc})" if exc else ""


class HttpClient:
    """Keep-alive connections to one server; concurrency is limited by the caller, not here."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None):
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if url.scheme == "https" else None
        self._prefix = url.path.rstrip("/")
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._head = f"Host: {url.netloc}\r\nUser-Agent: plan-bench\r\n{extra}"
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    async def stream(self, path: str, body: bytes, record: RequestRecord, timeout_s: float) -> None:
        """POST `body` and decode the SSE response into `record`. Sets record.t_start just before
        sending (after any gate the caller holds) and record.t_end when done; errors land in
        record.error, never raised, except cancellation."""
        head = (f"POST {self._prefix}{path} HTTP/1.1\r\n{self._head}Content-Type: application/json\r\n"
                f"Accept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        record.t_start = perf_counter()
        try:
            exchange = await self._roundtrip(head + body, record, timeout_s)
            record.status = exchange.parser.status
            if record.status != 200:
                text = exchange.body.decode("utf-8", "replace").strip()
                record.error = f"HTTP {record.status} {exchange.parser.reason}: {text[:500]}"
            elif not record.token_times and record.error is None:
                record.error = "no token message in the stream"
        except (OSError, TimeoutError, ProtocolError, ValueError) as exc:
            record.error = f"{type(exc).__name__}: {exc}"
        finally:
            record.t_end = perf_counter()

    async def request(self, method: str, path: str, timeout_s: float, body: bytes = b"") -> tuple[int, bytes]:
        """A plain request (health checks, model lists): status and the whole body."""
        head = f"{method} {self._prefix}{path} HTTP/1.1\r\n{self._head}"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        exchange = await self._roundtrip((head + "\r\n").encode() + body, None, timeout_s)
        return exchange.parser.status, bytes(exchange.body)

    async def close(self) -> None:
        for conn in list(self._open):
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
        self._open.clear()

    async def _roundtrip(self, data: bytes, record: RequestRecord | None, timeout_s: float) -> _Exchange:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for _attempt in range(2):
            conn = self._pop_idle() or await asyncio.wait_for(self._connect(), max(deadline - loop.time(), 0.0))
            waiter = loop.create_future()
            exchange = _Exchange(waiter, record)
            conn.exchange = exchange
            timer = loop.call_at(deadline, conn.timeout, timeout_s)
            try:
                conn.transport.write(data)
                await waiter
            except ConnectionResetError:
                # A pooled keep-alive connection the server had already closed: retry once on a fresh one.
                if conn.reused and exchange.parser.status is None and not (record and record.token_times):
                    continue
                raise
            except BaseException:
                conn.closed = True
                conn.transport.abort()   # cancelled or failed mid-response: the connection is unusable
                raise
            finally:
                timer.cancel()
                self._release(conn)
            return exchange
        raise ConnectionResetError("connection closed before a response, twice")

    def _pop_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
            self._open.discard(conn)
        return None

    async def _connect(self) -> _Connection:
        _, conn = await asyncio.get_running_loop().create_connection(
            _Connection, self._host, self._port, ssl=self._ssl)
        self._open.add(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.closed or conn.exchange is not None:
            self._open.discard(conn)
        else:
            self._idle.append(conn)
