"""`plan report KIND --input FILE.json --out report.html`: the CLI over the report writers.

The lead's CLI calls `register(app)`; `history_loader` (a function: DB path -> run records) lets
`plan report history --db results.db` read the harness's results DB without this package importing it.
"""
from __future__ import annotations

import json
from pathlib import Path

import typer

from planner.errors import UsageError
from reports.history import HistoryLoader

KINDS = ("recommend", "bench", "compare", "history")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"input file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not JSON ({e.msg} at line {e.lineno}); write it with --json") from None


def make_report(kind: str, input_path: Path | None, out: Path, db: Path | None = None,
                metrics: list[str] | None = None, history_loader: HistoryLoader | None = None) -> Path:
    """Render one report; every input problem is a UsageError naming the fix."""
    import reports
    from reports import history

    if kind not in KINDS:
        raise UsageError(f"unknown report {kind!r}: use one of {', '.join(KINDS)}")
    if kind == "history":
        if input_path is None and db is None:
            raise UsageError("history needs --input runs.json or --db results.db")
        if input_path is None and history_loader is None:
            raise UsageError("--db is not available in this build; export the runs to JSON and use --input")
        runs = history.runs_of(_read_json(input_path)) if input_path else history.load_runs(
            db=db, loader=history_loader)
        return reports.write_history_html(runs, out, metrics or None)
    if input_path is None:
        raise UsageError(f"{kind} needs --input FILE.json (e.g. `plan {kind} ... --json > {kind}.json`)")
    doc = _read_json(input_path)
    if kind != "compare" and not isinstance(doc, dict):
        raise UsageError(f"{input_path} holds a JSON {type(doc).__name__}, not the object `plan {kind} --json` "
                         "writes")
    writer = {"recommend": reports.write_recommend_html, "bench": reports.write_bench_html,
              "compare": reports.write_compare_html}[kind]
    return writer(doc, out)


def register(app: typer.Typer, history_loader: HistoryLoader | None = None) -> None:
    @app.command("report", help="Write a self-contained HTML report (charts inline, opens offline).\n\n"
                                "Examples:\n\n"
                                "* `plan recommend --model llama-70b --slo ttft=200ms --json > rec.json && "
                                "plan report recommend --input rec.json --out plan.html`\n\n"
                                "* `plan report bench --input run.json --out bench.html` (run.json from "
                                "`plan bench run --json run.json --per-request`)\n\n"
                                "* `plan report history --db plan-results.db --out history.html`")
    def report(
        kind: str = typer.Argument(..., metavar="KIND", help="recommend | bench | compare | history"),
        input_path: Path | None = typer.Option(None, "--input", "-i", help="The JSON document to render."),
        out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write."),
        db: Path | None = typer.Option(None, "--db", help="history: read the runs from this results DB."),
        metric: list[str] = typer.Option([], "--metric", help="history: metric to chart, repeatable "
                                         "(default: median/p99 TTFT, TPOT, ITL, E2E, throughput)."),
    ):
        path = make_report(kind, input_path, out, db, metric, history_loader)
        typer.echo(f"{kind} report written to {path} ({path.stat().st_size / 1e3:,.0f} kB)")
