"""Measure the client against the no-op server (a separate process with known token timing):
how far the client's time stamps are from the server's send times, and whether it kept up."""
from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from backends.harness.bench import _event_loop_runner
from backends.harness.client_check import client_report
from backends.harness.http_client import HttpClient
from backends.harness.metrics import compute_metrics
from backends.harness.payloads import body_maker
from backends.harness.process import ManagedServer, free_port
from backends.harness.prompts import synthetic_requests
from backends.harness.runner import LoadConfig, run_load
from planner.schemas import LengthDist


def start_noop(tokens: int, ttft_ms: float, itl_ms: float) -> ManagedServer:
    port = free_port()
    cmd = [sys.executable, "-m", "backends.harness.noop_server", "--port", str(port), "--tokens", str(tokens),
           "--ttft-ms", f"{ttft_ms:g}", "--itl-ms", f"{itl_ms:g}"]
    server = ManagedServer(cmd, f"http://127.0.0.1:{port}", name="noop server",
                           log_path=Path(tempfile.gettempdir()) / "plan-bench-logs" / f"noop-{port}.log")
    server.wait_healthy(30)
    return server


def run_selfcheck(*, rate_rps: float = 2000.0, duration_s: float | None = 3.0, num_requests: int | None = None,
                  concurrency: int | None = None, tokens: int = 4, ttft_ms: float = 1.0, itl_ms: float = 1.0,
                  prompt_len: int = 16, warmup: int = 200, server: ManagedServer | None = None) -> dict:
    """One load point against the no-op server (started here unless given). Timing error is each token
    message's receive time minus the server's send stamp; TTFT error is measured minus nominal TTFT."""
    own = server is None
    server = server or start_noop(tokens, ttft_ms, itl_ms)
    load = LoadConfig(rate_rps=rate_rps, arrival="poisson", max_concurrency=concurrency,
                      num_requests=num_requests, duration_s=duration_s, warmup_requests=warmup,
                      request_timeout_s=30.0, deadline_s=(duration_s or 60.0) + 60.0)

    async def go():
        client = HttpClient(server.base_url)
        requests = synthetic_requests(LengthDist(mean=prompt_len), LengthDist(mean=tokens))
        try:
            return await run_load(client, requests, body_maker("noop"), load, server_alive=server.gone)
        finally:
            await client.close()

    try:
        result = _event_loop_runner()(go())
    finally:
        if own:
            server.stop()
    metrics, per = compute_metrics(result.records, result.duration_s)
    client = client_report(result, load, metrics["completed"])
    ttft_err = [m.ttft_s * 1e3 - ttft_ms for m in per if m.ok]
    return {
        "rate_rps": None if math.isinf(rate_rps) else rate_rps, "concurrency": concurrency,
        "tokens": tokens, "ttft_ms": ttft_ms, "itl_ms": itl_ms, "status": result.status,
        "completed": metrics["completed"], "failed": metrics["failed"], "duration_s": result.duration_s,
        "achieved_rate_rps": client["achieved_rate_rps"],
        "p50_timing_error_ms": client["p50_timing_error_ms"], "p99_timing_error_ms": client["p99_timing_error_ms"],
        "p99_ttft_minus_nominal_ms": float(np.percentile(ttft_err, 99)) if ttft_err else None,
        "p99_dispatch_lag_ms": client["p99_dispatch_lag_ms"], "p99_loop_lag_ms": client["p99_loop_lag_ms"],
        "client_cpu_fraction": client["client_cpu_fraction"],
        "client_bound": client["client_bound"], "client_bound_reasons": client["client_bound_reasons"],
    }
