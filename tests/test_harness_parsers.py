"""HTTP framing and SSE decoding give the same events however the bytes are split."""
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.harness.http_parse import ResponseParser
from backends.harness.sse import SSEDecoder

EVENTS = [b'{"a": 1}', b'{"b": "x\\ny"}', b"[DONE]"]
BODY = (b": comment\n\n" + b"data: " + EVENTS[0] + b"\r\n\r\n" + b"event: x\ndata: " + EVENTS[1] + b"\n\n"
        + b"data: " + EVENTS[2] + b"\n\n")


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, pos = b"", 0
    for n in sizes + [len(body)]:
        piece = body[pos:pos + max(n, 1)]
        if not piece:
            break
        out += b"%x;ext=1\r\n%s\r\n" % (len(piece), piece)
        pos += len(piece)
    return out + b"0\r\nTrailer: y\r\n\r\n"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 40), max_size=8), st.lists(st.integers(1, 60), max_size=30))
def test_any_split(chunk_sizes, read_sizes):
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(BODY, chunk_sizes)
    got = []
    sse = SSEDecoder(lambda payload, t: got.append(payload))
    parser = ResponseParser(sse.feed)
    pos = 0
    for n in read_sizes + [len(raw)]:
        if pos >= len(raw):
            break
        parser.feed(raw[pos:pos + n], 0.0)
        pos += n
    assert parser.complete and parser.status == 200 and parser.keep_alive
    assert got == EVENTS


def test_content_length_and_close_delimited():
    body = []
    p = ResponseParser(lambda b, t: body.append(b))
    p.feed(b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nhel", 0.0)
    assert not p.complete
    p.feed(b"lo", 0.0)
    assert p.complete and b"".join(body) == b"hello" and p.status == 404
    q = ResponseParser(lambda b, t: None)
    q.feed(b"HTTP/1.0 200 OK\r\n\r\ndata", 0.0)
    assert not q.complete and not q.keep_alive
    q.feed_eof()
    assert q.complete
