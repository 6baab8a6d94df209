"""`plan profile` as a Python API: detect the device, run the selected microbenchmarks point by point
under a progress bar, and write the measured HardwareProfile."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

from planner.schemas import HardwareProfile
from profilers import writer
from profilers.device import DeviceInfo, detect
from profilers.errors import ProfilerError
from profilers.sweeps import Sweep, sweep_for

BENCHMARKS = ("bandwidth", "gemm", "attention", "launch", "collectives", "holdout")


@dataclass
class ProfileOptions:
    device: str = "cuda"
    quick: bool = False
    only: Optional[list[str]] = None            # run just these benchmarks
    skip: list[str] = field(default_factory=list)
    collectives_only: bool = False
    gpus: Optional[int] = None                  # use the first N GPUs (processes on the CPU)
    out: Optional[Path] = None
    merge_into: Optional[Path] = None
    command: str = "plan profile"
    progress: bool = True


@dataclass
class Step:
    group: str
    label: str
    run: Callable[[], Any]
    keep: Callable[[Any], None]                 # where the result goes in the raw tables


def selected_benchmarks(opts: ProfileOptions) -> list[str]:
    if opts.collectives_only:
        return ["collectives"]
    names = list(opts.only) if opts.only else list(BENCHMARKS)
    unknown = [n for n in names + list(opts.skip) if n not in BENCHMARKS]
    if unknown:
        raise ProfilerError(f"unknown benchmark {unknown[0]!r}: choose from {', '.join(BENCHMARKS)}")
    return [n for n in names if n not in opts.skip]


def _require_torch(device: str) -> None:
    try:
        import torch
    except ImportError:
        raise ProfilerError("PyTorch is not installed; the profilers need it (pip install torch)") from None
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ProfilerError(f"PyTorch sees no CUDA device (torch {torch.__version__}, CUDA "
                                f"{torch.version.cuda}); to profile the CPU instead use --device cpu")
        torch.cuda.set_device(0)


def _steps(names: list[str], sweep: Sweep, device: DeviceInfo, raw: dict, ctx,
           opts: ProfileOptions) -> list[Step]:
    from profilers import attention, bandwidth, gemm, launch

    steps: list[Step] = []
    if "bandwidth" in names:
        raw["bandwidth"] = []
        steps += [Step("bandwidth", f"copy {b / 2**20:g} MiB", lambda b=b: bandwidth.measure_copy(ctx, b),
                       raw["bandwidth"].append) for b in sweep.copy_bytes]
    if "gemm" in names:
        raw["gemm"], raw["gemm_impl"] = [], gemm.gemm_notes()
        steps += [Step("gemm", f"{p.dtype} M={p.m} {p.layer}", lambda p=p: gemm.measure_gemm(ctx, p),
                       raw["gemm"].append) for p in sweep.gemm_points()]
    if "attention" in names:
        raw["prefill"], raw["decode"], raw["attention_impl"] = [], [], attention.implementation()
        shapes = [sweep.attention] + [replace(sweep.attention, head_dim=d) for d in sweep.prefill_head_dims]
        steps += [Step("attention", f"prefill S={s} D={a.head_dim}",
                       lambda s=s, a=a: attention.measure_prefill(ctx, a, s), raw["prefill"].append)
                  for a in shapes for s in sweep.prefill_seqs]
        # decode: every head size at the primary's biggest points (the cost model scales by head size), then
        # the primary's whole grid (the scalar comes from it; its first point goes first)
        biggest = sorted(sweep.decode_points, key=lambda p: p[0] * p[1])[-2:]
        steps += [Step("attention", f"decode B={b} L={c} D={a.head_dim}",
                       lambda b=b, c=c, a=a: attention.measure_decode(ctx, a, b, c), raw["decode"].append)
                  for a, points in [(shapes[0], sweep.decode_points)] + [(a, biggest) for a in shapes[1:]]
                  for b, c in points]
    if "launch" in names:
        steps.append(Step("launch", f"{sweep.launch_kernels} tiny kernels",
                          lambda: launch.measure_launch(ctx, sweep.launch_kernels),
                          lambda r: raw.__setitem__("launch", r)))
    if "holdout" in names:
        raw["holdout"] = {"gemm": [], "copy": []}
        steps += [Step("holdout", f"{p.dtype} {p.m}x{p.n}x{p.k}", lambda p=p: gemm.measure_gemm(ctx, p),
                       lambda r: raw["holdout"]["gemm"].append(
                           {k: r[k] for k in ("m", "n", "k", "dtype", "layer", "seconds")}))
                  for p in sweep.holdout_gemm]
        steps += [Step("holdout", f"copy {b / 2**20:g} MiB", lambda b=b: bandwidth.measure_copy(ctx, b),
                       lambda r: raw["holdout"]["copy"].append(
                           {k: r[k] for k in ("copy_bytes", "bytes_moved", "seconds")}))
                  for b in sweep.holdout_copy]
    if "collectives" in names:
        steps += _collective_steps(device, sweep, raw, opts)
    return steps


def _group_sizes(device: DeviceInfo, opts: ProfileOptions) -> list[int]:
    """Group sizes 2..N: every visible GPU (or --gpus of them); on the CPU, --gpus gloo processes (2)."""
    if device.kind == "cpu":
        return list(range(2, (opts.gpus or 2) + 1))
    if opts.gpus and opts.gpus > device.count:
        raise ProfilerError(f"--gpus {opts.gpus} asked for, but only {device.count} GPU(s) are visible")
    return list(range(2, device.count + 1))


def _collective_steps(device: DeviceInfo, sweep: Sweep, raw: dict, opts: ProfileOptions) -> list[Step]:
    from profilers.collectives import measure_collectives

    groups = _group_sizes(device, opts)
    if not groups:
        raw.setdefault("notes", []).append("one GPU visible: collectives not measured")
        return []
    raw["collectives"] = {}
    timeout_s = 180.0 if opts.quick else 300.0
    return [Step("collectives", f"all-reduce/all-gather on {n}",
                 lambda n=n: measure_collectives(n, sweep.collective_bytes, device.kind, timeout_s),
                 lambda r: raw["collectives"].__setitem__(str(r["n"]), r)) for n in groups]


def _progress(enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.fields[group]:<11}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.description}"), console=Console(stderr=True))


def _execute(steps: list[Step], raw: dict, show: bool, after_step: Callable[[], None]) -> None:
    """Run every step; a step that fails is recorded in raw['failures'] and the run goes on, so one
    unsupported path (fp8 on an older GPU, an OOM) never costs the rest of the profile. Failures that
    concern the whole machine (ProfilerError: NCCL init, a hang) also go to raw['fatal'], so the run
    still writes what it measured and then exits non-zero."""
    raw.setdefault("failures", [])
    raw.setdefault("fatal", [])
    with _progress(show) as bar:
        task = bar.add_task("", total=len(steps), group="") if bar else None
        for step in steps:
            if bar:
                bar.update(task, description=step.label, group=step.group)
            try:
                step.keep(step.run())
            except ProfilerError as exc:
                raw["fatal"].append(str(exc))
                raw["failures"].append(f"{step.group} {step.label}: {exc}")
            except Exception as exc:                    # noqa: BLE001 - recorded, see the docstring
                raw["failures"].append(f"{step.group} {step.label}: {type(exc).__name__}: "
                                       f"{' '.join(str(exc).split())[:200]}")
            after_step()
            if bar:
                bar.advance(task)


def run_profile(opts: ProfileOptions) -> tuple[HardwareProfile, Path]:
    """Measure, write the profile, and return it with the path written."""
    start = time.monotonic()
    names = selected_benchmarks(opts)
    device = detect(opts.device, opts.gpus)
    _require_torch(opts.device)
    if opts.merge_into:
        _check_merge_target(Path(opts.merge_into), device)
    sweep = sweep_for(opts.device, opts.quick)
    raw: dict = {"notes": []}
    ctx = None
    if any(n != "collectives" for n in names):
        from profilers.context import make_context
        from profilers.timing import make_timer

        ctx = make_context(opts.device, make_timer(opts.device, opts.quick))
    _execute(_steps(names, sweep, device, raw, ctx, opts), raw, opts.progress,
             ctx.release if ctx is not None else lambda: None)
    if ctx is not None:
        raw["notes"] += ctx.notes
    duration = time.monotonic() - start
    if opts.collectives_only:
        return _write_collectives(device, raw, opts, duration)
    run_info = {"sweep": "cpu" if opts.device == "cpu" else ("quick" if opts.quick else "full"),
                "benchmarks": names, "failures": raw["failures"],
                "cache_bytes": ctx.cache_bytes if ctx else None,
                "timer": type(ctx.timer).__name__ if ctx else None}
    profile = writer.build_profile(device, raw, opts.command, duration, run_info)
    path = Path(opts.out) if opts.out else writer.default_output_path(profile.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    profile.dump(path)
    if raw["fatal"]:
        raise ProfilerError(f"{raw['fatal'][0]} (the rest was written to {path})")
    return profile, path


def _check_merge_target(path: Path, device: DeviceInfo) -> None:
    """Fail before measuring, not after, when the profile to merge into is missing or another GPU's."""
    if not path.is_file():
        raise ProfilerError(f"--merge-into {path}: no such profile file")
    name = HardwareProfile.load(path).name
    if device.kind == "cuda" and name != device.catalog_name:
        raise ProfilerError(f"--merge-into {path} is a {name} profile; this machine is {device.catalog_name}")


def _write_collectives(device: DeviceInfo, raw: dict, opts: ProfileOptions,
                       duration_s: float) -> tuple[HardwareProfile, Path]:
    """--collectives-only: merge the curves into --merge-into (or the default measured profile when it
    exists), else start a profile from the datasheet holding just these curves."""
    if raw["fatal"]:
        raise ProfilerError(raw["fatal"][0])
    if raw["failures"] or not raw.get("collectives"):
        raise ProfilerError("collective benchmark failed: " + ("; ".join(raw["failures"]) or
                                                              "fewer than 2 GPUs visible"))
    source = Path(opts.merge_into) if opts.merge_into else writer.default_output_path(device.catalog_name)
    target = Path(opts.out) if opts.out else source
    if source.exists():
        profile = writer.merge_collectives(HardwareProfile.load(source), raw["collectives"], device,
                                           opts.command)
    else:
        profile = writer.build_profile(device, raw, opts.command, duration_s, {"sweep": "collectives-only"})
    target.parent.mkdir(parents=True, exist_ok=True)
    profile.dump(target)
    return profile, target
