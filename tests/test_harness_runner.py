"""The runner's dispatch: a request is drawn and built before its arrival time, and sent before the
next one is drawn, so slow request sources (a block of prompts drawn at once) never make sends late."""
import asyncio
import time
from time import perf_counter

from backends.harness.prompts import RequestSpec
from backends.harness.runner import LoadConfig, run_load

_FIRST_DRAW_S = 0.05   # like drawing the first block of prompts


def _run(num_requests: int, rate_rps: float) -> tuple[list[tuple[str, int, float]], list]:
    """Run against a stand-in client; return what happened in order (draw, body, send) and the records."""
    log: list[tuple[str, int, float]] = []

    def source():
        index = 0
        while True:
            if index == 0:
                time.sleep(_FIRST_DRAW_S)
            log.append(("draw", index, perf_counter()))
            yield RequestSpec([index], 1, 1)
            index += 1

    def make_body(spec: RequestSpec) -> bytes:
        log.append(("body", spec.prompt[0], perf_counter()))
        return b"{}"

    class Client:
        async def stream(self, path, body, record, timeout_s):
            record.t_start = perf_counter()
            log.append(("send", record.index, record.t_start))
            record.status, record.t_end = 200, perf_counter()

    cfg = LoadConfig(rate_rps=rate_rps, arrival="constant", num_requests=num_requests)
    result = asyncio.run(run_load(Client(), source(), make_body, cfg))
    return log, result.records


def test_each_request_is_ready_before_its_arrival_time_and_sent_before_the_next_is_drawn():
    log, records = _run(num_requests=4, rate_rps=5.0)   # 200 ms to draw and build each next request
    order = [(what, i) for what, i, _ in log if what != "draw" or i < 4]
    assert order == [(what, i) for i in range(4) for what in ("draw", "body", "send")]
    ready = {i: t for what, i, t in log if what == "body"}
    # The first request too: the run's clock starts once it is ready, not before the slow first draw.
    assert all(ready[r.index] <= r.t_scheduled for r in records)


def test_rate_inf_sends_everything_in_order():
    log, records = _run(num_requests=5, rate_rps=float("inf"))
    assert [i for what, i, _ in log if what == "send"] == list(range(5))
    assert all(r.t_dispatch == records[0].t_scheduled for r in records)
