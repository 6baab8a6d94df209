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
# What each report reads, and the command that writes it.
NEEDS = {"recommend": "`plan recommend --json > rec.json`",
         "bench": "one run from `plan bench run --json run.json --per-request`",
         "compare": "the GPU table of `plan compare --json > cmp.json` (not the verdicts of `plan bench compare`)",
         "history": "--db plan-results.db (where `plan bench run` records runs) or a JSON list of runs"}
# Documents one command writes and another report would render as empty or misleading ("no plan meets the SLO").
WRITTEN_BY = {"recommend": "a recommendation (`plan recommend --json`)",
              "bench": "a benchmark run (`plan bench run --json`)",
              "compare": "a GPU comparison (`plan compare --json`)",
              "verdicts": "regression verdicts (`plan bench compare --json`), which no report renders on their own",
              "runs": "several runs (a `plan bench run` sweep, or exported history)",
              "search": "a rate search (`plan bench run --search-rate --json`), which no report renders"}
RENDERS = {"recommend": {"recommend"}, "bench": {"bench"}, "compare": {"compare"}, "history": {"runs"}}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"input file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not JSON ({e.msg} at line {e.lineno}); write it with --json") from None


def kind_of(doc) -> str | None:
    """Which command wrote `doc` (a WRITTEN_BY key), where its keys make that plain; None when unsure: the
    writers take partial and foreign documents (a vLLM result file, flat rows) as they are."""
    if isinstance(doc, list):
        runs = doc and all(isinstance(r, dict) and isinstance(r.get("metrics"), dict) for r in doc)
        return "runs" if runs else None
    if not isinstance(doc, dict):
        return None
    if "ranked" in doc and "closest" in doc:
        return "recommend"
    if isinstance(doc.get("verdicts"), list) and "overall" in doc:
        return "verdicts"
    if isinstance(doc.get("probes"), list):
        return "search"
    if isinstance(doc.get("runs"), list):
        return "runs"
    if isinstance(doc.get("metrics"), dict):
        return "bench"
    if isinstance(doc.get("rows"), list):
        return "compare"
    return None


def _check_kind(kind: str, doc, path: Path) -> None:
    found = kind_of(doc)
    if found is not None and found not in RENDERS[kind]:
        other = next((k for k, kinds in RENDERS.items() if found in kinds), None)
        hint = f": render it with `plan report {other}`" if other else ""
        raise UsageError(f"{path} holds {WRITTEN_BY[found]}{hint}; `plan report {kind}` needs {NEEDS[kind]}")


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
        if input_path is None and not db.is_file():   # else an empty report, as if no run had been recorded
            raise UsageError(f"no results database at {db}: `plan bench run` records runs there (its --db, "
                             "default plan-results.db or $PLAN_RESULTS_DB)")
        if input_path:
            doc = _read_json(input_path)
            _check_kind(kind, doc, input_path)
            runs = history.runs_of(doc)
        else:
            runs = history.load_runs(db=db, loader=history_loader)
        return reports.write_history_html(runs, out, metrics or None)
    if input_path is None:
        raise UsageError(f"`plan report {kind}` needs --input FILE.json: {NEEDS[kind]}")
    doc = _read_json(input_path)
    _check_kind(kind, doc, input_path)
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
        kind: str = typer.Argument(..., metavar="KIND", help="recommend (from `plan recommend --json`) | bench "
                                   "(`plan bench run --json --per-request`) | compare (`plan compare --json`, the "
                                   "GPU table; not `plan bench compare`) | history (--db, or a JSON list of runs)"),
        input_path: Path | None = typer.Option(None, "--input", "-i", help="The JSON document to render."),
        out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write."),
        db: Path | None = typer.Option(None, "--db", help="history: read the runs from this results DB."),
        metric: list[str] = typer.Option([], "--metric", help="history: metric to chart, repeatable "
                                         "(default: median/p99 TTFT, TPOT, ITL, E2E, throughput)."),
    ):
        path = make_report(kind, input_path, out, db, metric, history_loader)
        typer.echo(f"{kind} report written to {path} ({path.stat().st_size / 1e3:,.0f} kB)")
