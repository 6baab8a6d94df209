"""Timeouts, HTTP errors, broken streams and a dying server are counted failures with their error
text; runs never hang; partial results are kept."""
import asyncio
import json
import threading

import pytest

from backends.harness.http_client import HttpClient
from backends.harness.metrics import compute_metrics
from backends.harness.prompts import RequestSpec
from backends.harness.runner import LoadConfig, StopSignal, run_load

OK_STREAM = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
             + b"%x\r\n%s\r\n" % (len(e := b'data: {"choices":[{"text":"a"}]}\n\n'), e)
             + b"%x\r\n%s\r\n" % (len(u := b'data: {"choices":[],"usage":{"completion_tokens":1}}\n\n'), u)
             + b"0\r\n\r\n")


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The prompt names the fault."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
            fault = json.loads(await reader.readexactly(length))["prompt"]
            if fault == "ok":
                writer.write(OK_STREAM)
            elif fault == "500":
                writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 9\r\n\r\nkaboom!!!")
            elif fault == "break":
                writer.write(OK_STREAM[:80])
                await writer.drain()
                writer.close()
                return
            elif fault == "empty":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            elif fault == "hang":
                await asyncio.sleep(60)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass


@pytest.fixture(scope="module")
def fault_server():
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder = {}

    def serve():
        asyncio.set_event_loop(loop)
        holder["server"] = loop.run_until_complete(asyncio.start_server(_handle, "127.0.0.1", 0))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started.wait(10)
    port = holder["server"].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(loop.stop)


def _run(url: str, prompts: list[str], **cfg):
    async def go():
        client = HttpClient(url)
        specs = iter([RequestSpec(p, 1, 1) for p in prompts])
        def body(s):
            return json.dumps({"prompt": s.prompt}).encode()
        try:
            return await run_load(client, specs, body, LoadConfig(num_requests=len(prompts), **cfg))
        finally:
            await client.close()
    return asyncio.run(go())


def test_each_fault_is_a_counted_failure_with_its_text(fault_server):
    result = _run(fault_server, ["ok", "500", "break", "empty", "hang", "ok"], request_timeout_s=1.0,
                  max_concurrency=2)
    errors = {r.index: r.error for r in result.records}
    assert errors[0] is None and errors[5] is None
    assert "HTTP 500" in errors[1] and "kaboom" in errors[1]
    assert "stream broken" in errors[2] or "closed" in errors[2]
    assert errors[3] == "no token message in the stream"
    assert "timed out after 1 s" in errors[4]
    m, _ = compute_metrics(result.records, result.duration_s)
    assert m["completed"] == 2 and m["failed"] == 4
    assert result.status == "complete" and result.duration_s < 10


def test_overall_deadline_ends_a_hanging_run(fault_server):
    result = _run(fault_server, ["hang", "hang", "ok"], request_timeout_s=30.0, deadline_s=1.0)
    assert result.status == "deadline"
    assert sum(r.error is not None and "cancelled" in r.error for r in result.records) == 2
    assert result.duration_s < 5


def test_unreachable_server_fails_every_request_fast():
    result = _run("http://127.0.0.1:9", ["ok"] * 3, request_timeout_s=5.0)
    assert all("Connect" in r.error or "refused" in r.error for r in result.records)


def test_stop_signal_keeps_partial_results(fault_server):
    async def go():
        client = HttpClient(fault_server)
        stop = StopSignal()
        asyncio.get_running_loop().call_later(0.5, stop.set, "interrupted", "interrupted by Ctrl-C")
        specs = iter([RequestSpec("ok", 1, 1)] * 1000)
        def body(s):
            return json.dumps({"prompt": s.prompt}).encode()
        try:
            return await run_load(client, specs, body, LoadConfig(rate_rps=20.0, arrival="constant",
                                                                 num_requests=1000), stop=stop)
        finally:
            await client.close()
    result = asyncio.run(go())
    # ~10 requests go out in 0.5 s at 20 req/s; a loaded CI machine can shift that, not the outcome.
    assert result.status == "interrupted" and 1 <= len(result.records) <= 100
    assert result.not_sent == 1000 - len(result.records)
