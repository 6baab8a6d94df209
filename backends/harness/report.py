"""Human-readable output of a run: metrics, the client's own health, prediction errors."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from backends.harness.compare import MetricVerdict
from backends.harness.metrics import LATENCY_METRICS, VARIANT_METRICS



def _console() -> Console:
    # Tables stay readable when piped (rich would fall back to 80 columns).
    return Console(width=None if sys.stdout.isatty() else 140)

def _f(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_run(run: dict, console: Console | None = None) -> None:
    c = console or _console()
    m, cl = run["metrics"], run["client"]
    title = f"run {run.get('id', '')} [{run['backend']}] {run['status']}"
    if run.get("status_detail"):
        title += f": {run['status_detail']}"
    c.print(f"[bold]{title}[/bold]")
    c.print(f"completed {m['completed']}  failed {m['failed']}  not sent {run.get('not_sent', 0)}  "
            f"duration {m['duration']:.2f} s  requests/s {m['request_throughput']:.2f}  "
            f"output tok/s {m['output_throughput']:.1f}  total tok/s {m['total_token_throughput']:.1f}")
    if "request_goodput" in m:
        c.print(f"goodput {m['request_goodput']:.2f} req/s  good fraction {m['good_fraction']:.1%}  "
                f"(SLOs {m['goodput_slos_ms']} ms)")
    t = Table("ms", "mean", "median", "std", "p50", "p90", "p95", "p99")
    for name in LATENCY_METRICS + VARIANT_METRICS:
        t.add_row(name, *(_f(m.get(f"{s}_{name}_ms")) for s in ("mean", "median", "std", "p50", "p90", "p95", "p99")))
    c.print(t)
    offered = "inf" if cl["offered_rate_rps"] is None else f"{cl['offered_rate_rps']:g}"
    c.print(f"client: offered {offered} req/s, sent {_f(cl['dispatch_rate_rps'], 1)}, achieved "
            f"{_f(cl['achieved_rate_rps'], 1)}; dispatch lag p99 {_f(cl['p99_dispatch_lag_ms'])} ms, loop lag p99 "
            f"{_f(cl['p99_loop_lag_ms'])} ms, CPU {cl['client_cpu_fraction']:.0%}; host load "
            f"{cl['host_load_1m']:.1f} on {cl['host_cpus']} CPUs")
    if cl["client_bound"]:
        c.print("[yellow]warning: the client, not the server, limited this run: "
                + "; ".join(cl["client_bound_reasons"]) + "[/yellow]")
    if run.get("vs_predicted"):
        p = Table("metric", "measured", "predicted", "error", "likely range")
        for row in run["vs_predicted"]:
            lo, hi = row.get("interval") or (None, None)
            p.add_row(row["metric"], _f(row["measured"]), _f(row["predicted"]),
                      "-" if row["error"] is None else f"{row['error']:+.1%}",
                      "-" if lo is None else f"{_f(lo)}-{_f(hi)}" + ("" if row["inside"] else " (outside)"))
        c.print(p)
        basis = (run.get("predicted") or {}).get("interval_basis")
        if basis:
            c.print(f"[dim]likely range: {basis}[/dim]")
    elif run.get("prediction_error"):
        c.print(f"prediction: {run['prediction_error']}")
    for e in run.get("errors", [])[:5]:
        c.print(f"[red]{e['count']} x {e['error']}[/red]")
    for note in run.get("server", {}).get("notes") or []:
        c.print(f"note: {note}")


def print_verdicts(verdicts: list[MetricVerdict], overall: str, threshold: float, console: Console | None = None) -> None:
    c = console or _console()
    t = Table("metric", "run median ms", "base median ms", "ratio", "interval", "verdict")
    for v in verdicts:
        interval = "-" if v.low is None else f"[{v.low:.3f}, {v.high:.3f}]"
        t.add_row(v.metric, _f(v.run_median_ms, 3), _f(v.base_median_ms, 3), _f(v.ratio, 3), interval,
                  v.verdict + (f" ({v.note})" if v.note else ""))
    c.print(t)
    c.print(f"overall: [bold]{overall}[/bold] (threshold {threshold:.1%})")


def print_history(runs: list[dict], console: Console | None = None) -> None:
    t = Table("id", "created", "tag", "backend", "status", "model", "req/s", "ttft p50 ms", "tpot p50 ms", "git")
    for r in runs:
        m = r["metrics"]
        t.add_row(str(r["id"]), r["created_at"], r["tag"] or "", r["backend"] or "", r["status"] or "",
                  r["model"] or "", _f(m.get("request_throughput")), _f(m.get("median_ttft_ms")),
                  _f(m.get("median_tpot_ms")), r["git_rev"] or "")
    (console or _console()).print(t)
