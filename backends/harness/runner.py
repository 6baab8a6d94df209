"""The load runner: sends requests on an arrival schedule, behind an optional concurrency gate, with
warm-up, a per-request timeout, an overall deadline and early stop (Ctrl-C, server died)."""
from __future__ import annotations

import asyncio
import gc
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from time import perf_counter

import numpy as np

from backends.harness.arrivals import arrival_offsets_s
from backends.harness.http_client import HttpClient
from backends.harness.monitors import LoopLagMonitor
from backends.harness.prompts import RequestSpec
from backends.harness.record import RequestRecord

_LONG_SLEEP_S = 0.05       # sleeps longer than this wake early when the run is stopped
_WATCH_INTERVAL_S = 0.2    # how often the server process is checked


@dataclass
class LoadConfig:
    rate_rps: float = math.inf
    arrival: str = "poisson"                  # constant | poisson | gamma
    burstiness: float = 1.0
    max_concurrency: int | None = None
    num_requests: int | None = 100
    duration_s: float | None = None           # stop dispatching after this long (with or without a count)
    warmup_requests: int = 0
    request_timeout_s: float = 300.0
    deadline_s: float = 3600.0                # the whole measured phase, warm-up excluded
    seed: int = 0
    endpoint: str = "/v1/completions"


@dataclass
class LoadResult:
    records: list[RequestRecord]
    t0: float                                 # just before the first measured dispatch
    t_end: float                              # end of the last request
    status: str = "complete"                  # complete | interrupted | deadline | server_died | client_error
    status_detail: str = ""
    not_sent: int = 0                         # scheduled but never sent because the run stopped
    loop_lag_s: list[float] = field(default_factory=list)
    client_cpu_fraction: float = 0.0

    @property
    def duration_s(self) -> float:
        return max(self.t_end - self.t0, 0.0)


class StopSignal:
    """Set once with a reason (Ctrl-C, server died); the runner stops dispatching and cancels."""

    def __init__(self):
        self.event = asyncio.Event()
        self.status = "complete"
        self.detail = ""

    def set(self, status: str, detail: str) -> None:
        if not self.event.is_set():
            self.status, self.detail = status, detail
            self.event.set()


async def run_load(client: HttpClient, requests: Iterator[RequestSpec], make_body: Callable[[RequestSpec], bytes],
                   cfg: LoadConfig, *, stop: StopSignal | None = None,
                   server_alive: Callable[[], str | None] | None = None) -> LoadResult:
    """Warm up, then run the measured phase. `server_alive` returns None while the server runs,
    else why it is gone. Never raises for request failures: they are in the records."""
    stop = stop or StopSignal()
    loop = asyncio.get_running_loop()
    watcher = loop.create_task(_watch_server(server_alive, stop)) if server_alive else None
    monitor = LoopLagMonitor()
    records: list[RequestRecord] = []
    gc_was_enabled = gc.isenabled()
    try:
        if cfg.warmup_requests:
            await _warm_up(client, list(itertools.islice(requests, cfg.warmup_requests)), make_body, cfg, stop)
        # A full collection over thousands of live records stalls the loop for milliseconds, and every
        # time stamp taken after it is late: no cyclic GC while measuring (reference counting still
        # frees nearly everything; the cycles left are collected right after).
        gc.collect()
        gc.freeze()
        gc.disable()
        started = loop.create_future()
        # From t0, not before: the first request is drawn in between, which is no lag of the run's.
        started.add_done_callback(lambda _f: monitor.start())
        dispatcher = loop.create_task(_dispatch(client, requests, make_body, cfg, started, records, stop))
        if not stop.event.is_set() and not await _until_stopped(dispatcher, stop, cfg.deadline_s):
            stop.set("deadline", f"overall deadline of {cfg.deadline_s:g} s reached")
        if not dispatcher.done():
            dispatcher.cancel()
        await asyncio.gather(dispatcher, return_exceptions=True)
        if not dispatcher.cancelled() and dispatcher.exception() is not None:
            # A request source or arrival process that raised: say so, not "0 failed, 0 completed".
            exc = dispatcher.exception()
            stop.set("client_error", f"the load generator failed: {type(exc).__name__}: {exc}")
        monitor.stop()
    finally:
        if gc_was_enabled:
            gc.enable()
        gc.unfreeze()
        if watcher:
            watcher.cancel()
    not_sent = max(cfg.num_requests - len(records), 0) if cfg.num_requests and stop.event.is_set() else 0
    t0 = started.result() if started.done() else perf_counter()   # not started: the source failed or the run stopped
    t_end = max((r.t_end for r in records), default=t0)
    return LoadResult(records, t0, t_end, stop.status, stop.detail, not_sent, monitor.lags_s, monitor.cpu_fraction)


async def _send(client: HttpClient, record: RequestRecord, body: bytes, cfg: LoadConfig, stop: StopSignal,
                gate: asyncio.Semaphore | None) -> None:
    """One request, behind the gate when there is one (finite rates: requests arrive on schedule and
    queue at the gate, as in `vllm bench serve`)."""
    if not record.t_dispatch:
        record.t_dispatch = perf_counter()
    try:
        if gate is None:
            await client.stream(cfg.endpoint, body, record, cfg.request_timeout_s)
        else:
            async with gate:
                await client.stream(cfg.endpoint, body, record, cfg.request_timeout_s)
    except asyncio.CancelledError:
        record.error = record.error or f"cancelled: {stop.detail or stop.status}"
        record.t_end = record.t_end or perf_counter()
        raise


async def _dispatch(client: HttpClient, requests: Iterator[RequestSpec], make_body: Callable[[RequestSpec], bytes],
                    cfg: LoadConfig, started: asyncio.Future, records: list[RequestRecord], stop: StopSignal) -> None:
    """Send each request at its arrival time. `started` gets t0, the time the offsets count from."""
    loop = asyncio.get_running_loop()
    infinite = math.isinf(cfg.rate_rps)
    gate = asyncio.Semaphore(cfg.max_concurrency) if cfg.max_concurrency else None
    # At rate=inf everything arrives at t0 and waits at the gate in order; holding the gate here,
    # not in each task, keeps a duration-bounded run from creating endless waiting tasks.
    dispatcher_gate = gate if infinite else None
    task_gate = None if infinite else gate
    tasks: list[asyncio.Task] = []
    offsets = arrival_offsets_s(cfg.rate_rps, cfg.arrival, cfg.burstiness, np.random.default_rng(cfg.seed))
    limit = cfg.num_requests if cfg.num_requests is not None else math.inf
    t0 = None
    try:
        for index, (spec, offset) in enumerate(zip(requests, offsets)):
            if index >= limit or stop.event.is_set():
                break
            # Drawing a request (a block of prompts every 1024) and building its body can hold the loop for
            # milliseconds: done before its arrival time, the send is all that is left then.
            body = make_body(spec)
            if t0 is None:
                # The run starts once its first request is ready, or that request is late by the first draw.
                t0 = perf_counter()
                started.set_result(t0)
            if cfg.duration_s is not None and max(offset, perf_counter() - t0) >= cfg.duration_s:
                break
            target = t0 + offset
            delay = target - perf_counter()
            if delay > _LONG_SLEEP_S:
                if await _until_stopped(None, stop, delay) is None:
                    break
            elif delay > 0:
                await asyncio.sleep(delay)
            record = RequestRecord(index, spec.prompt_len, spec.output_len, t_scheduled=target)
            if infinite:
                record.t_dispatch = target   # every request arrived at t0; its wait is client_queue_time
            if dispatcher_gate is not None:
                await dispatcher_gate.acquire()
            records.append(record)
            task = loop.create_task(_send(client, record, body, cfg, stop, task_gate))
            if dispatcher_gate is not None:
                task.add_done_callback(lambda _t: dispatcher_gate.release())
            tasks.append(task)
            # Let the request go out before the next one is drawn and built (and, behind schedule, let
            # the requests in flight progress).
            await asyncio.sleep(0)
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _warm_up(client: HttpClient, specs: list[RequestSpec], make_body: Callable[[RequestSpec], bytes],
                   cfg: LoadConfig, stop: StopSignal) -> None:
    """Warm-up requests (connections, server caches, compilation) at the run's concurrency; not recorded."""
    gate = asyncio.Semaphore(cfg.max_concurrency) if cfg.max_concurrency else None
    warm = asyncio.gather(*(_send(client, RequestRecord(-1, s.prompt_len, s.output_len), make_body(s), cfg, stop, gate)
                            for s in specs))
    if not await _until_stopped(warm, stop, cfg.request_timeout_s + 5.0):
        warm.cancel()
        await asyncio.gather(warm, return_exceptions=True)


async def _until_stopped(aw: asyncio.Future | None, stop: StopSignal, timeout_s: float) -> bool | None:
    """Wait for `aw` (or just the timeout when None) unless stopped first.
    True: aw finished; False: timed out; None: stopped."""
    stopper = asyncio.ensure_future(stop.event.wait())
    waiting = {stopper} if aw is None else {stopper, aw}
    done, _ = await asyncio.wait(waiting, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if aw is not None and aw in done:
        return True
    return None if stopper in done else False


async def _watch_server(server_alive: Callable[[], str | None], stop: StopSignal) -> None:
    while True:
        gone = server_alive()
        if gone:
            stop.set("server_died", gone)
            return
        await asyncio.sleep(_WATCH_INTERVAL_S)
