"""Replay a recorded SSE stream with known time stamps through the HTTP/SSE decoding and the metric
code, and check every metric against the definitions in metrics.md by hand."""
import json

import numpy as np
import pytest

from backends.harness.http_parse import ResponseParser
from backends.harness.metrics import compute_metrics
from backends.harness.record import RequestRecord
from backends.harness.sse import SSEDecoder

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(text: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(text), text)


def token(text: str) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "text": text}], "usage": None}).encode() + b"\n\n"


def usage(prompt: int, completion: int) -> bytes:
    return b"data: " + json.dumps({"choices": [], "usage": {"prompt_tokens": prompt,
                                                            "completion_tokens": completion}}).encode() + b"\n\n"


def replay(record: RequestRecord, reads: list[tuple[float, bytes]]) -> None:
    """Feed the reads as the client would have seen them, each with its read time."""
    parser = ResponseParser(lambda body, t: sse.feed(body, t))
    sse = SSEDecoder(record.on_event)
    for t, data in reads:
        parser.feed(data, t)
    record.status = parser.status
    record.t_end = reads[-1][0]
    assert parser.complete


def request_a() -> RequestRecord:
    """t_start 10.000. Reads: role-only chunk at +20 ms (empty text: a token message, no content),
    a comment, content at +50 ms, one message carrying two tokens at +80 ms (one gap, not two), then one at
    +100 ms split across reads and CRLF line endings, usage 5 tokens, [DONE]."""
    rec = RequestRecord(0, prompt_len=7, output_len=5, t_scheduled=10.0, t_dispatch=10.0, t_start=10.0)
    last = token("d").replace(b"\n\n", b"\r\n\r\n")
    replay(rec, [
        (10.000, HEAD),
        (10.020, chunk(token("")) + chunk(b": keep-alive comment\n\n")),
        (10.050, chunk(token("a"))),
        (10.080, chunk(token("bc"))),
        (10.095, chunk(last[:30])),
        (10.100, chunk(last[30:]) + chunk(usage(7, 5))),
        (10.101, chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"),
    ])
    return rec


def request_b() -> RequestRecord:
    """t_start 11.0, three token messages at +10, +30, +60 ms, no usage: re-tokenize or assume 1."""
    rec = RequestRecord(1, prompt_len=3, output_len=3, t_scheduled=11.0, t_dispatch=11.0, t_start=11.0)
    replay(rec, [(11.000, HEAD), (11.010, chunk(token("x"))), (11.030, chunk(token("y"))),
                 (11.060, chunk(token("z")) + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")])
    return rec


def request_failed() -> RequestRecord:
    rec = RequestRecord(2, prompt_len=9, output_len=4, t_start=12.0)
    body = b'{"error": "overloaded"}'
    replay(rec, [(12.5, b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))])
    rec.error = "HTTP 503"
    return rec


class WordTokenizer:
    def count(self, text: str) -> int:
        return len(text)   # one token per character of the replayed text ("xyz" -> 3)


def test_replay_every_metric():
    a, b, f = request_a(), request_b(), request_failed()
    assert a.token_times == [10.020, 10.050, 10.080, 10.100] and a.done
    duration = 11.060 - 10.000
    m, per = compute_metrics([a, b, f], duration, goodput_slos_ms={"ttft": 15.0, "tpot": 40.0},
                             tokenizer=WordTokenizer())
    tol = 1e-4   # 0.1 microsecond in ms; the spec asks for 0.1 ms
    # per request, by hand (ms): A ttft 20, e2el 100, 5 tokens (usage) -> tpot (100-20)/4 = 20;
    # gaps 30, 30, 20; first content at 50. B ttft 10, e2el 60, 3 tokens (re-tokenized) -> tpot 25; gaps 20, 30.
    ttft, e2el, tpot, itl = [20, 10], [100, 60], [20, 25], [30, 30, 20, 20, 30]
    assert m["completed"] == 2 and m["failed"] == 1
    assert m["total_input_tokens"] == 7 + 3 and m["total_output_tokens"] == 5 + 3
    assert m["duration"] == pytest.approx(duration)
    assert m["request_throughput"] == pytest.approx(2 / duration)
    assert m["output_throughput"] == pytest.approx(8 / duration)
    assert m["total_token_throughput"] == pytest.approx(18 / duration)
    assert m["output_tokens_source"] == {"usage": 1, "retokenized": 1}
    for name, values in (("ttft", ttft), ("e2el", e2el), ("tpot", tpot), ("itl", itl),
                         ("ttft_content", [50, 10]), ("tpot_incl_first", [100 / 5, 60 / 3]),
                         ("itl_req_avg", [80 / 3, 25])):
        v = np.array(values, dtype=float)
        assert m[f"mean_{name}_ms"] == pytest.approx(v.mean(), abs=tol), name
        assert m[f"median_{name}_ms"] == pytest.approx(np.median(v), abs=tol), name
        assert m[f"std_{name}_ms"] == pytest.approx(v.std(), abs=tol), name
        for p in (50, 90, 95, 99):
            assert m[f"p{p}_{name}_ms"] == pytest.approx(np.percentile(v, p), abs=tol), (name, p)
    # hand values for the interpolation, not only NumPy against itself
    assert m["p90_itl_ms"] == pytest.approx(30.0, abs=tol)
    assert m["p90_ttft_ms"] == pytest.approx(19.0, abs=tol)
    assert m["std_e2el_ms"] == pytest.approx(20.0, abs=tol)
    assert m["concurrency_littles_law"] == pytest.approx((0.100 + 0.060) / duration)
    # goodput: A misses ttft<=15ms, B meets both; good fraction over completed + failed
    assert m["request_goodput"] == pytest.approx(1 / duration)
    assert m["good_fraction"] == pytest.approx(1 / 3)
    assert m["prompt_tokens_drift_mean"] == 0
    assert not per[2].ok and per[2].ttft_s is None


def test_two_messages_in_one_read_are_two_token_messages():
    rec = RequestRecord(0, 1, 2, t_start=1.0)
    replay(rec, [(1.0, HEAD), (1.01, chunk(token("a") + token("b")) + b"0\r\n\r\n")])
    assert rec.token_times == [1.01, 1.01]   # same read, same time stamp: a gap of 0


def test_no_tokenizer_assumes_one_token_and_no_tpot():
    b = request_b()
    m, per = compute_metrics([b], 0.06)
    assert per[0].output_tokens == 1 and per[0].output_tokens_source == "assumed_1"
    assert m["mean_tpot_ms"] is None and m["completed"] == 1


def test_no_token_message_is_a_failure():
    rec = RequestRecord(0, 1, 1, t_start=1.0)
    replay(rec, [(1.0, HEAD + chunk(usage(1, 0)) + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")])
    m, _ = compute_metrics([rec], 1.0)
    assert m["completed"] == 0 and m["failed"] == 1 and m["mean_ttft_ms"] is None
