"""`plan`: the command line, a thin layer over planner.api."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from planner import jsonout
from planner.errors import PlanError, UsageError, parser_errors, show_parser_error, validation_problem

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="Hardware-aware LLM deployment planner and benchmark harness.\n\n"
                       "Example: `plan recommend --model llama-70b --slo ttft=200ms`")
# Tables stay readable when piped (rich would fall back to 80 columns).
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)  # one error, one line


def _emit_json(doc: dict) -> None:
    sys.stdout.write(jsonout.dumps(doc) + "\n")


def _check_files(profile: str, prices: Optional[Path]) -> None:
    """--profile PATH and --prices files parse, or one line names the line and the problem (the catalog's own
    reader would print PyYAML's several lines)."""
    from planner.catalog import PROFILE_CHOICES
    from planner.parse import read_data_file

    if profile not in PROFILE_CHOICES and Path(profile).expanduser().is_file():
        read_data_file(profile, "--profile")
    if prices:
        read_data_file(prices, "--prices")


def _check_outputs(*options: tuple[str, Optional[Path]]) -> None:
    """Output files are checked (and their folders made) before the search, never after it."""
    from planner.parse import output_path

    for option, path in options:
        if path:
            output_path(path, option)


def _check_storage(url: str) -> None:
    """Opens the Optuna storage before the search, so that an unknown URL scheme or an unreachable database is one
    line and exit 2 (SQLAlchemy raises its own errors from deep inside the search)."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    try:
        optuna.storages.RDBStorage(url)
    except (SQLAlchemyError, ValueError, ImportError) as e:
        problem = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"cannot open --storage {url}: {problem}; give a database URL Optuna can open, e.g. "
                         "sqlite:///study.db") from None


@app.command(help="Rank deployments of a model that meet latency targets at the lowest cost.\n\n"
                  "Examples:\n\n"
                  "* `plan recommend --model llama-70b --slo ttft=200ms`\n\n"
                  "* `plan recommend --model qwen3-32b --slo ttft=500ms --slo tpot=30ms --gpus h100,h200 --rate 20`\n\n"
                  "* `plan recommend --model llama-8b --objective throughput --json --out plan.yaml`")
def recommend(
    model: str = typer.Option(..., "--model", "-m", help="Catalog name or alias (`plan models`), or a local "
                              "config.json / model folder. e.g. `llama-70b`"),
    slo: List[str] = typer.Option([], "--slo", help="Latency target, repeatable: ttft=200ms, tpot=30ms, e2e=5s "
                                  "(a unit is required; `<=` for `=` works too); percentiles like ttft_p99=500ms."),
    input_tokens: float = typer.Option(1024, "--input", help="Prompt length in tokens (mean). e.g. 2048"),
    output_tokens: float = typer.Option(256, "--output", help="Generated tokens per request (mean). e.g. 512"),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="Comma-separated GPU types to consider "
                                       "(default: the whole catalog, `plan gpus`). e.g. h100,h200"),
    max_gpus: int = typer.Option(64, "--max-gpus", help="Most GPUs a plan may use in total. e.g. 8"),
    rate: Optional[float] = typer.Option(None, "--rate", help="Requests/s the deployment must sustain; "
                                         "adds replicas. e.g. 20"),
    objective: str = typer.Option("cost", "--objective", help="cost ($ per million output tokens), "
                                  "throughput (tokens/s per GPU), latency (E2E) or goodput ($ per million output "
                                  "tokens of requests that meet the SLOs in simulation; needs --rate)."),
    top: int = typer.Option(5, "--top", help="How many plans to list. e.g. 10"),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON document instead of tables."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the best plan as YAML (feeds `plan serve`, "
                                       "`plan bench`). e.g. plan.yaml"),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write a self-contained HTML report "
                                        "(charts inline, opens offline). e.g. report.html"),
    seed: int = typer.Option(0, "--seed", help="Search seed (same seed, same answer)."),
    trials: int = typer.Option(300, "--trials", help="Optuna trials. e.g. 1000 for a wider search"),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL to share one study "
                                          "between workers. e.g. sqlite:///study.db"),
    profile: str = typer.Option("auto", "--profile", help="auto (measured profile when one exists), datasheet, "
                                "or a profile YAML path."),
    prices: Optional[Path] = typer.Option(None, "--prices", help="YAML/JSON {gpu: $ per GPU-hour} overriding "
                                          "catalog prices."),
    exhaustive: bool = typer.Option(False, "--exhaustive", help="Score every point instead of searching "
                                    "(slow on the whole catalog)."),
):
    from planner import api, render
    from planner.parse import parse_list

    for name, v in (("--top", top), ("--trials", trials)):
        if v <= 0:
            raise UsageError(f"{name} must be a positive integer, got {v}")
    _check_files(profile, prices)
    _check_outputs(("--out", out), ("--html", html))
    if storage:
        _check_storage(storage)
    progress = None
    if not as_json and sys.stderr.isatty():
        from rich.progress import Progress
        bar = Progress(transient=True, console=err)
        task = bar.add_task("searching", total=trials)
        bar.start()
        progress = lambda i, n: bar.update(task, completed=i)  # noqa: E731
    try:
        r = api.recommend(model, slo, parse_list(gpus) or None, input_tokens, output_tokens, rate, max_gpus,
                          objective, top, trials, seed, storage, profile, str(prices) if prices else None,
                          exhaustive, progress)
    finally:
        if progress:
            bar.stop()
    if out and r.best:
        r.best.plan.dump(out)
    if html:
        import reports
        reports.write_recommend_html(render.recommendation_json(r), html)
    if as_json:
        _emit_json(render.recommendation_json(r))
    else:
        render.print_recommendation(r, console)
        if out and r.best:
            from planner.launch import builtin_command
            console.print(f"Plan written to {out}; serve it with the built-in engine: {builtin_command(str(out))}, "
                          f"or measure it: plan bench run --plan {out} --backend builtin", markup=False)
    if not r.ranked:
        raise typer.Exit(3)


@app.command(help="The best plan on each GPU type side by side: GPUs and nodes for the rate, $ per hour and "
                  "per million tokens, tokens/s per GPU, power, headroom to each SLO.\n\n"
                  "Examples:\n\n"
                  "* `plan compare --model llama-70b --gpus h100,h200,a100,l40s,mi300x --slo ttft_p90=500ms "
                  "--slo tpot=50ms --rate 50`\n\n"
                  "* `plan compare --model llama-8b --gpus h100,l40s --rate 20 --prices prices.yaml --json`")
def compare(
    model: str = typer.Option(..., "--model", "-m", help="Catalog name or alias (`plan models`). e.g. llama-70b"),
    gpus: Optional[str] = typer.Option(None, "--gpus", help="Comma-separated GPU types (default: the whole "
                                       "catalog, `plan gpus`). e.g. h100,h200,mi300x"),
    slo: List[str] = typer.Option([], "--slo", help="Latency target, repeatable: ttft=200ms, tpot_p99=60ms."),
    rate: Optional[float] = typer.Option(None, "--rate", help="Requests/s to sustain (sizes replicas; the "
                                         "finalists are simulated). e.g. 50"),
    input_tokens: float = typer.Option(1024, "--input", help="Prompt length in tokens (mean). e.g. 2048"),
    output_tokens: float = typer.Option(256, "--output", help="Generated tokens per request (mean). e.g. 512"),
    max_gpus: int = typer.Option(64, "--max-gpus", help="Most GPUs a plan may use in total. e.g. 16"),
    objective: str = typer.Option("cost", "--objective", help="cost, throughput, latency or goodput."),
    trials: int = typer.Option(120, "--trials", help="Optuna trials per GPU type."),
    seed: int = typer.Option(0, "--seed", help="Search and simulation seed."),
    profile: str = typer.Option("auto", "--profile", help="auto, datasheet, or a profile YAML path."),
    prices: Optional[Path] = typer.Option(None, "--prices", help="YAML/JSON {gpu: $ per GPU-hour} overriding "
                                          "catalog prices."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON document instead of a table."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write a self-contained HTML report "
                                        "(charts inline, opens offline). e.g. report.html"),
):
    from planner import catalog, render
    from planner.compare import compare as run_compare
    from planner.parse import parse_list

    if trials <= 0 or max_gpus <= 0:
        raise UsageError("--trials and --max-gpus must be positive integers")
    if rate is not None and not rate > 0:
        raise UsageError("--rate must be a positive number of requests per second, e.g. --rate 20")
    _check_files(profile, prices)
    _check_outputs(("--html", html))
    names = parse_list(gpus) or [h.name for h in catalog.list_hardware(profile)]
    cmp = run_compare(model, names, slo, rate, input_tokens, output_tokens, max_gpus, objective, trials, seed,
                      profile, str(prices) if prices else None)
    if html:
        import reports
        reports.write_compare_html(render.comparison_json(cmp), html)
    if as_json:
        _emit_json(render.comparison_json(cmp))
    else:
        render.print_comparison(cmp, console)
    if not any(w.ok for w in cmp.rows):
        raise typer.Exit(3)


@app.command(help="Where the time and memory of one configuration go, operator by operator.\n\n"
                  "Examples:\n\n"
                  "* `plan explain --model llama-70b --gpu h200 --tp 4`\n\n"
                  "* `plan explain --model llama-8b --gpu h100 --batch 64 --input 2048 --output 128 --json`")
def explain(
    model: str = typer.Option(..., "--model", "-m", help="Catalog name, alias or config.json path. e.g. llama-8b"),
    gpu: str = typer.Option(..., "--gpu", help="GPU type (`plan gpus`). e.g. h100"),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel GPUs. e.g. 4"),
    pp: int = typer.Option(1, "--pp", help="Pipeline stages. e.g. 2"),
    weight_dtype: str = typer.Option("bf16", "--weight-dtype", help="bf16, fp8, int8 or int4."),
    kv_dtype: str = typer.Option("bf16", "--kv-dtype", help="bf16, fp8 or int8."),
    batch: int = typer.Option(1, "--batch", help="Concurrent sequences. e.g. 32"),
    input_tokens: float = typer.Option(1024, "--input", help="Prompt tokens. e.g. 4096"),
    output_tokens: float = typer.Option(256, "--output", help="Output tokens. e.g. 128"),
    max_num_batched_tokens: int = typer.Option(8192, "--max-num-batched-tokens", help="Token budget per step."),
    gpu_memory_utilization: float = typer.Option(0.90, "--gpu-memory-utilization", help="Fraction of GPU "
                                                 "memory the engine may use. e.g. 0.92"),
    profile: str = typer.Option("auto", "--profile", help="auto, datasheet, or a profile YAML path."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON document instead of tables."),
):
    from planner import api, render

    for name, v in (("--tp", tp), ("--pp", pp), ("--batch", batch), ("--max-num-batched-tokens",
                                                                      max_num_batched_tokens)):
        if v <= 0:
            raise UsageError(f"{name} must be a positive integer, got {v}")
    if weight_dtype not in ("bf16", "fp16", "fp8", "int8", "int4"):
        raise UsageError(f"unknown --weight-dtype {weight_dtype!r}: use bf16, fp8, int8 or int4")
    if kv_dtype not in ("bf16", "fp16", "fp8", "int8"):
        raise UsageError(f"unknown --kv-dtype {kv_dtype!r}: use bf16, fp8 or int8")
    if not 0 < gpu_memory_utilization <= 1:
        raise UsageError("--gpu-memory-utilization must be in (0, 1], e.g. 0.9")
    _check_files(profile, None)
    x = api.explain(model, gpu, tp, pp, weight_dtype, kv_dtype, batch, input_tokens, output_tokens,
                    max_num_batched_tokens, None, gpu_memory_utilization, profile)
    if as_json:
        _emit_json(render.explanation_json(x))
    else:
        render.print_explanation(x, console)


@app.command(help="List the model catalog (names, aliases, parameters). e.g. `plan models --json`")
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    from planner import catalog
    from planner.params import param_counts

    specs = catalog.list_models()
    if as_json:
        _emit_json({"models": [s.model_dump(mode="json", exclude_none=True) for s in specs]})
        return
    from rich.table import Table
    t = Table(title="Model catalog")
    for col in ("name", "aliases", "params (B)", "active (B)", "layers", "heads/kv", "hf id"):
        t.add_column(col)
    for s in specs:
        pc = param_counts(s)
        t.add_row(s.name, ", ".join(s.aliases), f"{pc.total / 1e9:.1f}", f"{pc.active / 1e9:.1f}",
                  str(s.num_layers), f"{s.num_attention_heads}/{s.num_kv_heads}", s.hf_id or "")
    console.print(t)


@app.command(help="List the GPU catalog with memory, bandwidth, peaks, price and profile kind. "
                  "e.g. `plan gpus --json`")
def gpus(as_json: bool = typer.Option(False, "--json", help="Print JSON."),
         profile: str = typer.Option("auto", "--profile", help="auto or datasheet.")):
    from planner import catalog

    _check_files(profile, None)
    hws = catalog.list_hardware(profile)
    if as_json:
        _emit_json({"gpus": [h.model_dump(mode="json", exclude_none=True) for h in hws]})
        return
    from rich.table import Table
    t = Table(title="GPU catalog")
    for col in ("name", "aliases", "memory GB", "TB/s", "bf16 TFLOP/s", "fp8 TFLOP/s", "link GB/s", "$/h",
                "profile"):
        t.add_column(col)
    for h in hws:
        fp8 = h.peak_flops.get("fp8")
        t.add_row(h.name, ", ".join(h.aliases), f"{h.memory_bytes / 1e9:.0f}",
                  f"{h.memory_bandwidth_bytes_per_s / 1e12:.2f}", f"{h.peak_flops['bf16'] / 1e12:.0f}",
                  f"{fp8 / 1e12:.0f}" if fp8 else "-", f"{h.interconnect.bandwidth_bytes_per_s / 1e9:.0f}",
                  f"{h.price_per_gpu_hour:.2f}", h.provenance.kind)
    console.print(t)


@app.command(help="Fit the cost model's efficiency parameters for one GPU to measured engine runs and write a "
                  "calibrated profile, with held-out residuals for prediction intervals.\n\n"
                  "Examples:\n\n"
                  "* `plan calibrate --gpu h200 --trace steps.jsonl --model llama-8b --out H200.cal.yaml`\n\n"
                  "* `plan calibrate --gpu h100 --trace step_trace.jsonl --run serving.json --out H100.cal.yaml "
                  "--json`")
def calibrate(
    gpu: str = typer.Option(..., "--gpu", help="GPU type (`plan gpus`) or a profile YAML path. e.g. h200"),
    trace: List[Path] = typer.Option([], "--trace", help="Engine step trace (JSON lines), repeatable. "
                                     "e.g. steps.jsonl"),
    fit_trace: List[Path] = typer.Option([], "--fit-trace", help="Step trace that is only fitted, never held "
                                         "out (a served run's steps, say), repeatable."),
    run: List[Path] = typer.Option([], "--run", help="`plan bench run --json` file, repeatable: predicted by "
                                   "the calibrated profile, its errors become the serving residuals."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model of traces without a config line. "
                                        "e.g. llama-8b"),
    tp: int = typer.Option(1, "--tp", help="Tensor-parallel GPUs of traces without a config line."),
    weight_dtype: str = typer.Option("bf16", "--weight-dtype", help="Weights of traces without a config line."),
    kv_dtype: str = typer.Option("bf16", "--kv-dtype", help="KV cache of traces without a config line."),
    params: Optional[str] = typer.Option(None, "--params", help="Comma-separated parameters to fit (default: "
                                         "all). e.g. step_overhead_s,memory_scale"),
    holdout: float = typer.Option(0.3, "--holdout", help="Fraction of points held out of the fit."),
    seed: int = typer.Option(0, "--seed", help="Seed of the held-out split."),
    profile: str = typer.Option("auto", "--profile", help="Profile to start from: auto, datasheet, measured."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write the calibrated profile (default: "
                                       "`calibrated/<GPU>.yaml` in the last $PLAN_HW_PATH directory, else in "
                                       "hw_profiles/, where `--profile auto` looks first; never over an "
                                       "existing file unless --out names it)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary instead of text."),
):
    from planner import calibrate as cal
    from planner import catalog
    from planner.costmodel import Deployment
    from planner.parse import parse_list

    _check_files(profile, None)
    base = catalog.load_hardware(gpu, profile)
    path = _calibration_out(out, base.name)
    default = Deployment(catalog.load_model(model), tp, 1, weight_dtype, kv_dtype) if model else None
    names = tuple(parse_list(params)) if params else cal.DEFAULT_PARAMS
    c = cal.calibrate(base, [str(t) for t in trace], [str(r) for r in run], default, names, holdout, seed,
                      "plan calibrate " + " ".join(sys.argv[2:]), fit_traces=[str(t) for t in fit_trace])
    c.profile.dump(path)
    used = catalog.measured_profile_path(base.name)
    summary = {"gpu": base.name, "out": str(path), "used_by_auto": used is not None and used.resolve() == path.resolve(),
               "params": c.params, "initial": c.initial,
               "points": {"train": len(c.train), "test": len(c.test)},
               "median_abs_error": c.profile.measured["calibration"]["median_abs_error"]}
    if as_json:
        _emit_json(summary)
        return
    console.print(f"{base.name}: {len(c.train)} points fitted, {len(c.test)} held out; profile written to {path}",
                  markup=False)
    if not summary["used_by_auto"]:
        console.print(f"  --profile auto uses {used or 'the datasheet'} for {base.name}: pass --profile {path} to "
                      "use this fit", markup=False)
    for k, v in c.params.items():
        console.print(f"  {k:<24} {c.initial[k]:.4g} -> {v:.4g}")
    for k, v in summary["median_abs_error"].items():
        console.print(f"  held-out median |error| {k:<14} {v:.1%}")


def _calibration_out(out: Optional[Path], gpu: str) -> Path:
    """Where `plan calibrate` writes, decided before the fit. By default the slot `--profile auto` reads first
    (catalog.measured_profile_path: calibrated/ in the last $PLAN_HW_PATH directory, else in hw_profiles/), so the
    fit is used; a file already there (hw_profiles/calibrated/ ships some) is only replaced when --out names it."""
    import os

    from planner import catalog
    from planner.parse import output_path

    if out is not None:
        return output_path(out, "--out")
    user_dirs = [d for d in os.environ.get(catalog.HW_PATH_ENV, "").split(os.pathsep) if d]
    root = Path(user_dirs[-1]).expanduser() if user_dirs else catalog.HW_DIR
    path = root / "calibrated" / f"{gpu}.yaml"
    if path.exists():
        raise UsageError(f"{path} exists and is not replaced by default: write yours with --out FILE (then "
                         f"--profile FILE), set ${catalog.HW_PATH_ENV} to a folder of yours (the fit goes to its "
                         f"calibrated/, which --profile auto prefers), or pass --out {path} to replace it")
    return output_path(path, "--out")


def _register_subcommands() -> None:
    """Commands that live with their packages; each imports torch/aiohttp lazily, inside the command."""
    from backends.engine.cli import register as engine
    from backends.harness.cli import register as harness
    from backends.harness.results_db import list_runs
    from profilers.cli import register as profilers
    from reports.cli import register as reports

    for register in (engine, harness, profilers):
        register(app)
    # `plan report history --db` reads the harness's results database.
    reports(app, history_loader=lambda path: list_runs(path, limit=500))


_register_subcommands()


def main() -> None:
    """Entry point: turn every known failure into one line and an exit code."""
    from pydantic import ValidationError

    try:
        rc = app(standalone_mode=False)
        if isinstance(rc, int):                  # click returns typer.Exit's code when not standalone
            sys.exit(rc)
    except PlanError as e:
        err.print(f"error: {e}", markup=False, highlight=False)
        sys.exit(e.exit_code)
    except ValidationError as e:
        err.print(f"error: invalid input: {validation_problem(e)}", markup=False, highlight=False)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except parser_errors() as e:
        sys.exit(show_parser_error(e))
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except OSError as e:
        err.print(f"error: {e.strerror or e}: {getattr(e, 'filename', '') or ''}", markup=False, highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
