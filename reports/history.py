"""The history report: how benchmark metrics moved over CI runs, with the regression gate's verdicts.

Input: a list of run records (or {"runs": [...]}), in any order. A record (see reports/README.md):
    {id | run_id, created_at | timestamp, git_rev | commit, tag, metrics: {vLLM names...},
     verdicts: {metric: pass | regression | inconclusive}
               or [{metric, verdict, ...}] or {"overall", "verdicts": [...]} (`plan bench compare --json`),
     verdict | overall: the run's overall verdict}
Harness verdicts name base metrics (ttft, tpot, itl, e2el); they colour every statistic of that metric.
Records from the results DB (backends/harness/results_db.list_runs) have this shape without verdicts.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from reports.html import Page, badge, figure, note, table
from reports.scale import Scale
from reports.svg import Plot

DEFAULT_METRICS = ("median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_itl_ms", "mean_e2el_ms",
                   "output_throughput", "request_throughput", "mean_ttft_ms", "mean_tpot_ms")
VERDICT_CLASS = {"pass": "ok", "ok": "ok", "improvement": "ok", "regression": "bad", "fail": "bad",
                 "inconclusive": "warn"}
MAX_X_LABELS = 6

HistoryLoader = Callable[[Path], list[dict]]


def runs_of(doc: dict | list) -> list[dict]:
    runs = doc.get("runs", []) if isinstance(doc, dict) else doc
    runs = [r for r in runs if isinstance(r, dict)]
    # Oldest first: by time stamp where every run has one, else by id (the DB lists newest first).
    if runs and all(_time(r) for r in runs):
        return sorted(runs, key=_time)
    if runs and all(isinstance(r.get("id"), int) for r in runs):
        return sorted(runs, key=lambda r: r["id"])
    return runs


def _time(r: dict) -> str | None:
    return r.get("created_at") or r.get("timestamp")


def _id(r: dict) -> str:
    return str(r.get("run_id") or r.get("id") or "?")


def _rev(r: dict) -> str:
    return str(r.get("git_rev") or r.get("commit") or "")[:7]


def verdicts(r: dict) -> dict[str, str]:
    """{metric: verdict} from any of the accepted shapes."""
    v = r.get("verdicts", r.get("compare"))
    if isinstance(v, dict) and isinstance(v.get("verdicts"), list):
        v = v["verdicts"]
    if isinstance(v, list):
        return {str(x.get("metric")): str(x.get("verdict")) for x in v if isinstance(x, dict)}
    return {str(k): str(x) for k, x in v.items()} if isinstance(v, dict) else {}


def overall(r: dict) -> str | None:
    v = r.get("verdict") or r.get("overall")
    if v is None and isinstance(r.get("compare"), dict):
        v = r["compare"].get("overall")
    if v is None:
        vs = verdicts(r).values()
        v = ("regression" if "regression" in vs else "inconclusive" if "inconclusive" in vs
             else "pass" if vs else None)
    return str(v) if v else None


def verdict_for(r: dict, metric: str) -> str | None:
    """The verdict on `metric` (e.g. p99_ttft_ms): its own, else its base metric's (ttft)."""
    vs = verdicts(r)
    if metric in vs:
        return vs[metric]
    parts = metric.split("_")
    base = "_".join(parts[1:-1]) if len(parts) >= 3 and parts[-1] == "ms" else None
    return vs.get(base) if base else None


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def chosen_metrics(runs: list[dict], wanted: Iterable[str] | None) -> list[str]:
    present = {k for r in runs for k, v in (r.get("metrics") or {}).items() if _num(v)}
    if wanted:
        return [m for m in wanted if m in present]
    picked = [m for m in DEFAULT_METRICS if m in present]
    return picked or sorted(present)[:6]


def _trend(runs: list[dict], metric: str) -> str:
    pts, tips, classes = [], [], []
    for i, r in enumerate(runs):
        v = (r.get("metrics") or {}).get(metric)
        if _num(v):
            verdict = verdict_for(r, metric)
            pts.append((i, float(v)))
            classes.append(VERDICT_CLASS.get(verdict or "", "muted"))
            tips.append(f"{_id(r)} {_rev(r)} {_time(r) or ''}: {metric} {v:,.4g}"
                        + (f" ({verdict})" if verdict else ""))
    if not pts:
        return note(f"{metric}: no values.")
    plot = Plot(metric, "CI run (oldest → newest)", metric, [0, max(len(runs) - 1, 1)], [y for _, y in pts],
                width=480, height=260, pad=0.05)
    # Runs are categories: one slot each, exactly as many as there are runs (no "nice" rounding).
    plot.x = Scale(-0.5, len(runs) - 0.5, plot.x.p0, plot.x.p1)
    every = max(1, -(-len(runs) // MAX_X_LABELS))
    plot.x_tick_labels = {float(i): (_rev(r) or _id(r)) for i, r in enumerate(runs) if i % every == 0}
    plot.line(pts, 0, title=metric)
    for cls, label in (("ok", "pass"), ("bad", "regression"), ("warn", "inconclusive"), ("muted", "no verdict")):
        idx = [j for j, c in enumerate(classes) if c == cls]
        if idx:
            plot.points([pts[j] for j in idx], cls, label, titles=[tips[j] for j in idx])
    return figure(plot)


def build(doc: dict | list, metrics: Iterable[str] | None = None) -> Page:
    runs = runs_of(doc)
    page = Page("Benchmark history", f"{len(runs)} runs"
                + (f", {_time(runs[0])} to {_time(runs[-1])}" if runs and _time(runs[0]) else ""))
    if not runs:
        page.section("Trends", note("The input has no runs."))
        return page
    names = chosen_metrics(runs, metrics)
    last = overall(runs[-1])
    if last:
        page.section("Latest verdict", f"<p>{badge(f'{_id(runs[-1])}: {last}', VERDICT_CLASS.get(last, 'warn'))}</p>")
    page.section("Trends", f'<div class="grid2">{"".join(_trend(runs, m) for m in names)}</div>' if names
                 else note("No numeric metrics in the runs."))
    rows, classes = [], []
    for r in reversed(runs):                      # newest first, as a log reads
        o = overall(r)
        m = r.get("metrics") or {}
        rows.append([_id(r), _time(r), _rev(r), r.get("tag"), o] + [m.get(k) for k in names])
        classes.append(["", "", "", "", VERDICT_CLASS.get(o or "", "")] + [
            VERDICT_CLASS.get(verdict_for(r, k) or "", "") if verdict_for(r, k) not in (None, "pass") else ""
            for k in names])
    page.section("Runs", table(["run", "time", "commit", "tag", "verdict"] + names, rows, classes))
    return page


def load_runs(input_path: Path | None = None, db: Path | None = None, loader: HistoryLoader | None = None) -> list[dict]:
    """Runs from a JSON file, or from a results DB through `loader` (the harness's DB reader)."""
    if input_path is not None:
        return runs_of(json.loads(Path(input_path).read_text()))
    if db is not None:
        if loader is None:
            raise ValueError("reading --db needs a history loader (reports.cli.register(app, history_loader=...))")
        return runs_of(loader(Path(db)))
    raise ValueError("give --input FILE.json or --db results.db")


def write(runs: dict | list, path: str | Path, metrics: Iterable[str] | None = None) -> Path:
    data = runs_of(runs)
    return build(data, metrics).write(path, data={"runs": data})
