"""The `profile` command. `register(app)` adds it to the planner's root CLI; `python -m profilers.cli
profile ...` runs it standalone (the GPU script uses that, so it works before the root CLI is wired)."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from planner.errors import PlanError, UsageError

DEVICES = ("cuda", "cpu")


def _names(values: Optional[list[str]]) -> list[str]:
    """Accept both `--only gemm,bandwidth` and `--only gemm --only bandwidth`."""
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]


def _summary(profile, path: Path) -> str:
    eff, measured = profile.efficiency, profile.measured or {}
    parts = [f"wrote {path} ({profile.provenance.duration_s:.0f} s)" if profile.provenance.duration_s
             else f"wrote {path}"]
    if measured.get("bandwidth"):
        parts.append(f"memory {eff.memory:.2f}")
    if eff.gemm_by_m:
        parts.append("gemm " + " ".join(f"{d} {eff.gemm[d]:.2f}" for d in sorted(eff.gemm_by_m)))
    if measured.get("collectives"):
        parts.append(f"all-reduce alpha {eff.allreduce_alpha_s * 1e6:.1f} us, "
                     f"busbw {eff.allreduce_busbw_fraction:.2f}")
    failures = (measured.get("run") or {}).get("failures") or []
    if failures:
        parts.append(f"{len(failures)} point(s) failed, listed under measured.run.failures")
    return "; ".join(parts)


def _check_usage(opts, benchmarks: tuple[str, ...]) -> None:
    """Usage errors exit 2 here: the runner's own checks raise ProfilerError, whose exit 3 means "this machine
    cannot be profiled" (no GPU, no NVML)."""
    if opts.device not in DEVICES:
        raise UsageError(f"unknown --device {opts.device!r}: use {' or '.join(DEVICES)}")
    unknown = [n for n in [*(opts.only or []), *opts.skip] if n not in benchmarks]
    if unknown:
        raise UsageError(f"unknown benchmark {unknown[0]!r} in --only/--skip: choose from {', '.join(benchmarks)}")
    if opts.gpus is not None and opts.gpus < 1:
        raise UsageError(f"--gpus must be a positive integer, got {opts.gpus}")


def profile_command(
    device: str = typer.Option("cuda", help="cuda or cpu (cpu: tiny sizes, for tests and CI)"),
    quick: bool = typer.Option(False, "--quick", help="short run (about a minute on a GPU)"),
    only: Optional[list[str]] = typer.Option(None, help="run only these: bandwidth,gemm,attention,launch,"
                                                        "collectives,holdout"),
    skip: Optional[list[str]] = typer.Option(None, help="skip these benchmarks (same names)"),
    collectives_only: bool = typer.Option(False, "--collectives-only",
                                          help="measure multi-GPU all-reduce/all-gather curves only"),
    gpus: Optional[int] = typer.Option(None, help="use the first N GPUs (collective groups 2..N)"),
    merge_into: Optional[Path] = typer.Option(None, help="with --collectives-only: profile to merge into"),
    out: Optional[Path] = typer.Option(None, help="output YAML (default `hw_profiles/measured/<GPU>.yaml`)"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Measure this machine and write a measured hardware profile."""
    from profilers.runner import BENCHMARKS, ProfileOptions, run_profile

    opts = ProfileOptions(device=device, quick=quick, only=_names(only) or None, skip=_names(skip),
                          collectives_only=collectives_only, gpus=gpus, out=out, merge_into=merge_into,
                          command="plan " + " ".join(shlex.quote(a) for a in sys.argv[1:]), progress=progress)
    try:
        _check_usage(opts, BENCHMARKS)
        profile, path = run_profile(opts)
    except PlanError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except Exception as exc:                            # noqa: BLE001 - one line, never a traceback
        if os.environ.get("PLAN_DEBUG"):
            raise
        typer.echo(f"error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} "
                   f"(PLAN_DEBUG=1 shows the traceback)", err=True)
        raise typer.Exit(1) from None
    typer.echo(_summary(profile, path))


def register(app: typer.Typer) -> None:
    app.command("profile")(profile_command)


def main() -> None:
    app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown")

    @app.callback()
    def _root() -> None:
        """Profilers of the LLM deployment planner."""

    register(app)
    app()


if __name__ == "__main__":
    main()
