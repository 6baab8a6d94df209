"""Incremental HTTP/1.1 response parser: status line, headers, then a body that is chunked,
length-delimited or delimited by the connection closing.

Pure (no I/O), so a recorded byte stream can be replayed through it with chosen time stamps.
Body bytes are handed on with the time stamp of the read that brought them.
"""
from __future__ import annotations

from collections.abc import Callable

BodySink = Callable[[bytes, float], None]


class ProtocolError(Exception):
    """The server sent something that is not HTTP/1.1."""


class ResponseParser:
    __slots__ = (
        "_buf",
        "_chunk_state",
        "_left",
        "_mode",
        "_on_body",
        "complete",
        "headers",
        "keep_alive",
        "reason",
        "status",
    )

    def __init__(self, on_body: BodySink):
        self.status: int | None = None
        self.reason = ""
        self.headers: dict[str, str] = {}
        self.complete = False
        self.keep_alive = True
        self._on_body = on_body
        self._buf = bytearray()
        self._mode = "head"          # head | chunked | length | close
        self._left = 0               # bytes left in the current chunk or the whole body
        self._chunk_state = "size"   # size | data | crlf | trailers

    def feed(self, data: bytes, t: float) -> None:
        if self._mode == "head":
            self._buf += data
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > 65536:
                    raise ProtocolError("response head larger than 64 KiB")
                return
            self._parse_head(bytes(self._buf[:end]))
            data = bytes(self._buf[end + 4:])
            self._buf.clear()
            if self.complete or not data:
                return
        if self._mode == "chunked":
            self._feed_chunked(data, t)
        elif self._mode == "length":
            take = data[:self._left]
            self._left -= len(take)
            if self._left == 0:
                self.complete = True
            self._on_body(take, t)
        elif self._mode == "close":
            self._on_body(data, t)

    def feed_eof(self) -> None:
        """The connection closed: completes a close-delimited body, otherwise the stream broke."""
        if self._mode == "close" and self.status is not None:
            self.complete = True

    def _parse_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        self.status = int(parts[1])
        self.reason = parts[2] if len(parts) > 2 else ""
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        connection = self.headers.get("connection", "").lower()
        self.keep_alive = connection != "close" and parts[0] == "HTTP/1.1" or connection == "keep-alive"
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            self._mode = "chunked"
        elif "content-length" in self.headers:
            self._mode = "length"
            self._left = int(self.headers["content-length"])
            self.complete = self._left == 0
        elif self.status in (204, 304) or 100 <= self.status < 200:
            self._mode = "length"
            self.complete = True
        else:
            self._mode = "close"
            self.keep_alive = False

    def _feed_chunked(self, data: bytes, t: float) -> None:
        # Works on immutable bytes: in the common case (whole chunks per read, nothing left over)
        # there is no copy into a buffer at all.
        buf = bytes(self._buf) + data if self._buf else data
        pos = 0
        out = []
        n = len(buf)
        while pos < n:
            state = self._chunk_state
            if state == "data":
                take = min(n - pos, self._left)
                out.append(buf[pos:pos + take])
                pos += take
                self._left -= take
                if self._left == 0:
                    self._chunk_state = "crlf"
            elif state == "crlf":
                if n - pos < 2:
                    break
                pos += 2
                self._chunk_state = "size"
            else:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                line = buf[pos:eol]
                pos = eol + 2
                if state == "trailers":
                    if not line:
                        self.complete = True
                        break
                    continue
                try:
                    size = int(line.split(b";", 1)[0], 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size line {line[:40]!r}") from None
                if size == 0:
                    self._chunk_state = "trailers"
                else:
                    self._left = size
                    self._chunk_state = "data"
        self._buf = bytearray(buf[pos:]) if pos < n else bytearray()
        if out:
            self._on_body(out[0] if len(out) == 1 else b"".join(out), t)
