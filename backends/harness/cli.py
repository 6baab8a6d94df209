"""`plan bench ...` commands. The lead's CLI calls `register(app)`; errors become one line and an exit code."""
from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path

import typer

from backends.harness import compare as cmp
from backends.harness import results_db
from backends.harness.bench import BenchOptions, BenchSession, WorkloadOptions
from backends.harness.client_check import ClientThresholds
from backends.harness.options import (ARRIVALS, PROMPT_KINDS, check_choice, check_counts, check_rate, integers,
                                      length_dist, numbers, positive, rate_range)
from backends.harness.prompts import FIRST_ID
from backends.harness.report import print_history, print_run, print_verdicts
from backends.harness.runner import LoadConfig
from backends.harness.servers import BACKENDS, ServerOptions
from backends.harness.sweep import search_max_rate, sweep
from planner import jsonout
from planner.errors import PlanError, UsageError
from planner.parse import load_plan, output_path, parse_slo, read_data_file

bench_app = typer.Typer(help="Benchmark a plan on a live server and compare runs.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")


def _fail(exc: PlanError) -> typer.Exit:
    typer.echo(f"error: {str(exc).strip()}", err=True)
    return typer.Exit(exc.exit_code)


def _threshold(text: str) -> float:
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise UsageError(f"bad threshold {text!r}: use e.g. 5% or 0.05") from None


def _check_builtin(plan_path: Path, model: str | None, device: str, load_format: str,
                   num_kv_blocks: int | None) -> None:
    """What the built-in engine's server would refuse (unknown model, pipeline parallelism, a load format or
    device it lacks), refused here instead: exit 2 now, not exit 1 from a server that died starting."""
    from backends.engine.cli import engine_config_from_args   # torch-free, like the engine's own checks
    from backends.engine.config import EngineError, check_device

    try:
        check_device(device)
    except EngineError as exc:
        raise UsageError(str(exc)) from None
    engine_config_from_args(str(plan_path), model, load_format=load_format or None, num_kv_blocks=num_kv_blocks)


def _save(doc: dict, db: Path | None, no_db: bool) -> None:
    if not no_db:
        doc["id"] = results_db.save_run(doc, db)


def _json_doc(doc: dict, per_request: bool) -> dict:
    return doc if per_request else {k: v for k, v in doc.items() if k != "samples"}


@bench_app.command("run")
def run_cmd(
    plan_path: Path | None = typer.Option(None, "--plan", help="plan YAML/JSON (optional for --backend url)"),
    backend: str = typer.Option("builtin", help="builtin | vllm | url"),
    url: str | None = typer.Option(None, help="server base URL for --backend url"),
    model: str | None = typer.Option(None, help="model to serve (path or name); default: the plan's"),
    served_model: str | None = typer.Option(None, help="model name in requests; default: the server's first"),
    launch_cmd: str | None = typer.Option(None, help="vllm launch command, e.g. 'python -m vllm.entrypoints.openai.api_server'"),
    device: str = typer.Option("auto", help="builtin engine device: auto (cuda when there is a GPU) | cuda | cpu"),
    load_format: str = typer.Option("dummy", help="dummy (random weights) or auto; '' to omit"),
    num_kv_blocks: int | None = typer.Option(None, help="builtin engine KV blocks"),
    server_arg: list[str] = typer.Option([], help="extra server argument (repeatable)"),
    startup_timeout: float = typer.Option(600.0, help="seconds to wait for the server's /health"),
    rate: float = typer.Option(math.inf, help="requests/s; inf sends all at once"),
    arrival: str = typer.Option("poisson", help="constant | poisson | gamma"),
    burstiness: float = typer.Option(1.0, help="gamma shape (1 = Poisson)"),
    concurrency: int | None = typer.Option(None, help="max requests in flight"),
    num_requests: int | None = typer.Option(None, help="requests to measure (default 100 unless --duration)"),
    duration: float | None = typer.Option(None, help="seconds of dispatch"),
    warmup: int = typer.Option(0, help="warm-up requests, not measured"),
    request_timeout: float = typer.Option(300.0, help="seconds per request"),
    deadline: float | None = typer.Option(None, help="seconds for the whole measured phase"),
    seed: int = typer.Option(0),
    input_len: int = typer.Option(128, help="mean prompt tokens"),
    input_dist: str = typer.Option("fixed", help="fixed | uniform | normal | lognormal"),
    input_std: float = typer.Option(0.0), input_min: int | None = typer.Option(None),
    input_max: int | None = typer.Option(None),
    output_len: int = typer.Option(32, help="mean output tokens (max_tokens)"),
    output_dist: str = typer.Option("fixed"), output_std: float = typer.Option(0.0),
    output_min: int | None = typer.Option(None), output_max: int | None = typer.Option(None),
    prompt_kind: str = typer.Option("ids", help="ids (token ids) | text"),
    vocab_size: int | None = typer.Option(None, help="random token ids are drawn below this (default: below "
                                          "1000 inside the vocabulary the server reports or the model has, "
                                          "else below 256)"),
    sharegpt: Path | None = typer.Option(None, help="ShareGPT-format JSON file of prompts"),
    tokenizer: Path | None = typer.Option(None, help="tokenizer.json (or its folder) to count tokens"),
    chat: bool = typer.Option(False, "--chat", help="use /v1/chat/completions (text prompts)"),
    temperature: float = typer.Option(0.0),
    slo: list[str] = typer.Option([], help="SLO for goodput or --search-rate, repeatable: ttft_p99<=200ms or "
                                  "ttft_p99=200ms, tpot<=50ms, e2e=5s (a unit is required)"),
    sweep_rates: str | None = typer.Option(None, help="comma-separated rates: one run each"),
    sweep_concurrencies: str | None = typer.Option(None, help="comma-separated concurrencies: one run each"),
    search_rate: str | None = typer.Option(None, help="LOW:HIGH req/s: highest rate meeting every --slo"),
    search_steps: int = typer.Option(6),
    max_dispatch_lag_ms: float = typer.Option(5.0, help="flag the client as the bottleneck above this p99"),
    json_out: Path | None = typer.Option(None, "--json", help="write the run(s) here"),
    per_request: bool = typer.Option(False, "--per-request", help="include per-request detail in --json"),
    html: Path | None = typer.Option(None, "--html", help="also write a self-contained HTML report of the "
                                     "(last) run, e.g. bench.html"),
    tag: str | None = typer.Option(None),
    db: Path | None = typer.Option(None, help="results DB (default plan-results.db or $PLAN_RESULTS_DB)"),
    no_db: bool = typer.Option(False, "--no-db", help="do not record the run"),
) -> None:
    """Serve a plan on a backend, load it, print measured vs predicted, record the run."""
    try:
        # Every check before the server starts: a bad value costs nothing, and exits 2.
        check_choice(backend, "--backend", BACKENDS)
        if plan_path is None and backend != "url":
            raise UsageError(f"--backend {backend} needs --plan")
        check_rate(rate)
        check_choice(arrival, "--arrival", ARRIVALS)
        positive(burstiness, "--burstiness", "0.5")
        check_counts(concurrency=concurrency, num_requests=num_requests, warmup=warmup, search_steps=search_steps,
                     num_kv_blocks=num_kv_blocks)
        for option, value, example in (("--duration", duration, "60"), ("--request-timeout", request_timeout, "300"),
                                       ("--deadline", deadline, "3600"), ("--startup-timeout", startup_timeout, "600"),
                                       ("--max-dispatch-lag-ms", max_dispatch_lag_ms, "5")):
            positive(value, option, example)
        if temperature < 0:
            raise UsageError(f"--temperature must be >= 0, got {temperature:g}")
        check_choice(prompt_kind, "--prompt-kind", PROMPT_KINDS)
        if vocab_size is not None and vocab_size <= FIRST_ID:
            raise UsageError(f"--vocab-size must be above {FIRST_ID} (lower ids are special tokens), got {vocab_size}")
        if chat and prompt_kind == "ids" and not sharegpt:
            raise UsageError("--chat needs text prompts: add --prompt-kind text or --sharegpt")
        if search_rate and (sweep_rates or sweep_concurrencies):
            raise UsageError("--search-rate and --sweep-rates/--sweep-concurrencies exclude each other: pick one")
        bounds = rate_range(search_rate) if search_rate else None
        rates = numbers(sweep_rates, "--sweep-rates", "1,2,4")
        concurrencies = integers(sweep_concurrencies, "--sweep-concurrencies", "1,8,32")
        sweeping = sweep_concurrencies or sweep_rates or search_rate
        if math.isinf(rate) and duration is not None and concurrency is None and not sweeping:
            raise UsageError("--duration at rate=inf would send without bound: add --rate or --concurrency")
        slos = [parse_slo(s) for s in slo]
        if search_rate and not slos:
            raise UsageError("--search-rate needs at least one --slo")
        plan = load_plan(plan_path) if plan_path else None
        if backend == "builtin":
            _check_builtin(plan_path, model, device, load_format, num_kv_blocks)
        for option, path in (("--json", json_out), ("--html", html), ("--db", None if no_db else results_db.db_path(db))):
            if path:
                output_path(path, option)
        load = LoadConfig(rate_rps=rate, arrival=arrival, burstiness=burstiness, max_concurrency=concurrency,
                          num_requests=num_requests or (None if duration else 100), duration_s=duration,
                          warmup_requests=warmup, request_timeout_s=request_timeout,
                          deadline_s=deadline or ((duration or 0) + request_timeout + 3600),
                          seed=seed, endpoint="/v1/chat/completions" if chat else "/v1/completions")
        opts = BenchOptions(
            backend=backend,
            server=ServerOptions(url=url, model=model, served_model=served_model, launch_cmd=launch_cmd,
                                 device=device, load_format=load_format or None, num_kv_blocks=num_kv_blocks,
                                 extra_args=list(server_arg), startup_timeout_s=startup_timeout),
            workload=WorkloadOptions(
                input_tokens=length_dist(input_dist, input_len, input_std, input_min, input_max, "input"),
                output_tokens=length_dist(output_dist, output_len, output_std, output_min, output_max, "output"),
                prompt_kind=prompt_kind, vocab_size=vocab_size, sharegpt=sharegpt, tokenizer=tokenizer,
                chat=chat, temperature=temperature),
            slos=[s for s in slos if s.metric != "itl"] if search_rate else slos,
            thresholds=ClientThresholds(dispatch_lag_p99_ms=max_dispatch_lag_ms),
            tag=tag, command=shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else None)
        if backend != "url":   # loading a model can take minutes: say what is being waited for
            what = model or (plan.model if plan else "the model")
            typer.echo(f"starting the {backend} server for {what}{f' on {device}' if backend == 'builtin' else ''}; "
                       f"waiting up to "
                       f"{startup_timeout:g} s for it to answer /health", err=True)
        with BenchSession(plan, plan_path, opts) as session:
            def measure(point: LoadConfig) -> dict:
                doc = session.measure(point)
                _save(doc, db, no_db)
                print_run(doc)
                return doc

            if bounds:
                result = search_max_rate(measure, load, slos, bounds[0], bounds[1], steps=search_steps)
                runs = [p["run"] for p in result["probes"]]
                best = result["max_rate_rps"]
                typer.echo(f"highest rate meeting {', '.join(result['slos'])}: "
                           f"{'none in range' if best is None else f'{best:.3g} req/s'}")
                out = {**result, "probes": [{**p, "run": _json_doc(p["run"], per_request)} for p in result["probes"]]}
            elif rates or concurrencies:
                runs = sweep(measure, load, rates=rates, concurrencies=concurrencies)
                out = {"runs": [_json_doc(r, per_request) for r in runs]}
            else:
                runs = [measure(load)]
                out = _json_doc(runs[0], per_request)
        if json_out:
            json_out.write_text(jsonout.dumps(out, indent=1))
        if html and runs:
            import reports
            reports.write_bench_html(runs[-1], html)   # before _json_doc strips the per-request samples
        worst = max((r["exit_code"] for r in runs), default=0)
        if worst:
            last = runs[-1]
            saved = f"run id {last['id']}" if "id" in last else "not recorded"
            typer.echo(f"{last['status']}: {last['status_detail'] or ''} {last['metrics']['failed']} failed, "
                       f"{last['metrics']['completed']} completed; partial results saved ({saved})".replace(":  ", ": "),
                       err=True)
            raise typer.Exit(worst)
    except PlanError as exc:
        raise _fail(exc) from None


def _run_file(path: Path) -> dict:
    """A `plan bench run --json --per-request` file, or one line saying why it is not one."""
    doc = read_data_file(path, "run file")
    if isinstance(doc, dict) and any(isinstance(doc.get(k), list) for k in ("runs", "probes")):
        raise UsageError(f"{path} holds several runs (a sweep or a rate search): compare single runs, by id or tag "
                         "(`plan bench history`) or from `plan bench run --json FILE --per-request`")
    if not isinstance(doc, dict):
        what = "is empty" if doc is None else f"holds a JSON {type(doc).__name__}, not a run document"
        raise UsageError(f"{path} {what}: write one with `plan bench run --json FILE --per-request`")
    if not doc.get("samples"):
        raise UsageError(f"{path} has no per-request samples: write it with --per-request")
    return doc


def _resolve(ref: str, db: Path | None) -> dict:
    path = Path(ref)
    if path.suffix == ".json":
        return _run_file(path)
    if not results_db.db_path(db).is_file():
        raise UsageError(f"no run {ref!r} (an id, a tag or a .json file): {_no_db(db)}")
    run = results_db.load_run(ref, db)
    if run is None:
        raise UsageError(f"no run {ref!r} (an id, a tag or a .json file) in {results_db.db_path(db)}")
    return run


def _no_db(db: Path | None) -> str:
    return (f"no results database at {results_db.db_path(db)}: `plan bench run` records runs there "
            "(--db or $PLAN_RESULTS_DB names another)")


@bench_app.command("compare")
def compare_cmd(
    run_ref: str = typer.Argument(..., metavar="RUN", help="run id, tag or JSON file"),
    baseline: str = typer.Option(..., help="baseline run id, tag or JSON file"),
    threshold: str = typer.Option("5%", help="allowed slow-down of the median, e.g. 5% or 0.05"),
    metrics: str = typer.Option(",".join(cmp.COMPARE_METRICS), help="comma-separated: ttft,tpot,itl,e2el"),
    confidence: float = typer.Option(0.95), seed: int = typer.Option(0), n_boot: int = typer.Option(2000),
    fail_on_inconclusive: bool = typer.Option(False, "--fail-on-inconclusive", help="exit 3 when the verdict is inconclusive"),
    json_out: Path | None = typer.Option(None, "--json"),
    db: Path | None = typer.Option(None),
) -> None:
    """Statistical verdict per metric; exit 0 pass, 1 regression, 3 inconclusive (with --fail-on-inconclusive)."""
    try:
        th = _threshold(threshold)
        if not 0 < confidence < 1:
            raise UsageError(f"--confidence must be in (0, 1), e.g. 0.95; got {confidence:g}")
        check_counts(n_boot=n_boot)
        if json_out:
            output_path(json_out, "--json")
        names = [m.strip() for m in metrics.split(",") if m.strip()]
        bad = [m for m in names if m not in cmp.COMPARE_METRICS]
        if bad:
            raise UsageError(f"unknown metric(s) {', '.join(bad)}; choose from {', '.join(cmp.COMPARE_METRICS)}")
        run, base = _resolve(run_ref, db), _resolve(baseline, db)
        verdicts = [cmp.compare_metric(run, base, m, th, n_boot=n_boot, confidence=confidence, seed=seed)
                    for m in names]
        overall = cmp.overall_verdict(verdicts)
        print_verdicts(verdicts, overall, th)
        if json_out:
            json_out.write_text(jsonout.dumps({"overall": overall, "threshold": th,
                                               "verdicts": [v.__dict__ for v in verdicts]}, indent=1))
        code = cmp.exit_code(overall, fail_on_inconclusive)
        if code:
            raise typer.Exit(code)
    except PlanError as exc:
        raise _fail(exc) from None


@bench_app.command("history")
def history_cmd(tag: str | None = typer.Option(None), limit: int = typer.Option(20),
                db: Path | None = typer.Option(None)) -> None:
    """List recorded runs, newest first."""
    try:
        check_counts(limit=limit)
        if not results_db.db_path(db).is_file():   # an empty list would look like a database without runs
            raise UsageError(_no_db(db))
    except PlanError as exc:
        raise _fail(exc) from None
    print_history(results_db.list_runs(db, tag=tag, limit=limit))


@bench_app.command("selfcheck")
def selfcheck_cmd(rate: float = typer.Option(2000.0), duration: float = typer.Option(3.0),
                  concurrency: int | None = typer.Option(None), tokens: int = typer.Option(4),
                  ttft_ms: float = typer.Option(1.0), itl_ms: float = typer.Option(1.0),
                  json_out: Path | None = typer.Option(None, "--json")) -> None:
    """Measure the client's own overhead against the built-in no-op server."""
    from backends.harness.selfcheck import run_selfcheck
    try:
        if json_out:
            output_path(json_out, "--json")
        result = run_selfcheck(rate_rps=rate, duration_s=duration, concurrency=concurrency, tokens=tokens,
                               ttft_ms=ttft_ms, itl_ms=itl_ms)
    except PlanError as exc:
        raise _fail(exc) from None
    for key, value in result.items():
        typer.echo(f"{key:28s} {value}")
    if json_out:
        json_out.write_text(jsonout.dumps(result, indent=1))
    if result["client_bound"]:
        raise typer.Exit(1)
