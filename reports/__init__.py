"""Self-contained HTML reports (inline SVG charts, no script, no network) for recommend, bench, compare
and history documents. Each writer takes the JSON document as a dict and returns the path written.

    from reports import write_recommend_html
    write_recommend_html(json.load(open("rec.json")), "report.html")
"""
from __future__ import annotations

from pathlib import Path

# Each writer imports its module on call: `plan --help` must not pay for numpy and the planner's imports.


def write_recommend_html(doc: dict, path: str | Path) -> Path:
    """`plan recommend --json` document -> report (calls planner.api.explain for the roofline)."""
    from reports import recommend
    return recommend.write(doc, path)


def write_bench_html(doc: dict, path: str | Path) -> Path:
    """`plan bench run --json --per-request` document (or a vLLM result file) -> report."""
    from reports import bench
    return bench.write(doc, path)


def write_compare_html(doc: dict | list, path: str | Path) -> Path:
    """Procurement table document -> report."""
    from reports import compare
    return compare.write(doc, path)


def write_history_html(runs: dict | list, path: str | Path, metrics: list[str] | None = None) -> Path:
    """Run records (a list, or {"runs": [...]}) -> trend report."""
    from reports import history
    return history.write(runs, path, metrics)


__all__ = ["write_bench_html", "write_compare_html", "write_history_html", "write_recommend_html"]
