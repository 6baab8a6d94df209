"""Load-generator capacity: short streamed requests against the no-op server (its own process).

    python benchmarks/bench_harness.py [--rates 1000,2000,3000] [--duration 4] [--json out.json]

Reports, per offered rate: achieved requests/s, the client's timing error (token-message receive
time minus the no-op server's send stamp, same CLOCK_MONOTONIC), TTFT minus the nominal TTFT,
dispatch lag, event-loop lag and client CPU. Target: >= 2000 req/s with timing error p99 < 1 ms.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from backends.harness.selfcheck import run_selfcheck, start_noop

TARGET_RPS, TARGET_ERROR_P99_MS = 2000.0, 1.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="1000,2000,3000")
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per rate")
    ap.add_argument("--tokens", type=int, default=4)
    ap.add_argument("--ttft-ms", type=float, default=1.0)
    ap.add_argument("--itl-ms", type=float, default=1.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-pin", action="store_true", help="leave the client and server on any CPU")
    args = ap.parse_args()
    server = start_noop(args.tokens, args.ttft_ms, args.itl_ms)
    cpus = sorted(os.sched_getaffinity(0))
    if not args.no_pin and len(cpus) >= 2:
        # One core each: on a 2-core machine the scheduler otherwise moves them onto one core, and the
        # timing error then measures run-queue waits rather than the client.
        os.sched_setaffinity(server.proc.pid, {cpus[1]})
        os.sched_setaffinity(0, {cpus[0]})
    try:
        rows = [run_selfcheck(rate_rps=float(r), duration_s=args.duration, tokens=args.tokens, ttft_ms=args.ttft_ms,
                              itl_ms=args.itl_ms, warmup=500, server=server) for r in args.rates.split(",")]
    finally:
        server.stop()
    table = Table("offered req/s", "achieved req/s", "failed", "timing err p50 ms", "timing err p99 ms",
                  "ttft-nominal p99 ms", "dispatch lag p99 ms", "loop lag p99 ms", "client CPU", "client-bound",
                  title=f"plan-bench client vs no-op server ({args.tokens} tokens, ttft {args.ttft_ms:g} ms, "
                        f"itl {args.itl_ms:g} ms, {args.duration:g} s per rate)")
    for r in rows:
        table.add_row(f"{r['rate_rps']:g}", f"{r['achieved_rate_rps']:.0f}", str(r["failed"]),
                      f"{r['p50_timing_error_ms']:.3f}", f"{r['p99_timing_error_ms']:.3f}",
                      f"{r['p99_ttft_minus_nominal_ms']:.3f}", f"{r['p99_dispatch_lag_ms']:.3f}",
                      f"{r['p99_loop_lag_ms']:.3f}", f"{r['client_cpu_fraction']:.0%}",
                      "yes" if r["client_bound"] else "no")
    Console().print(table)
    met = [r for r in rows if r["achieved_rate_rps"] >= TARGET_RPS * 0.98 and r["failed"] == 0
           and r["p99_timing_error_ms"] < TARGET_ERROR_P99_MS]
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "load_average": os.getloadavg(), "command": " ".join(sys.argv), "rows": rows,
              "target": {"rate_rps": TARGET_RPS, "timing_error_p99_ms": TARGET_ERROR_P99_MS, "met": bool(met)}}
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
