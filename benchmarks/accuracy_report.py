"""ACCURACY.md from the raw output of benchmarks/bench_accuracy.py: predicted vs measured, per machine.

  python benchmarks/accuracy_report.py benchmarks/results/accuracy/H200 benchmarks/results/accuracy/H100-SXM
  python benchmarks/accuracy_report.py /tmp/acc --out /tmp/ACCURACY.md          # the CPU-tiny check

Per machine directory (step.json, step_trace.jsonl, serving.json): the step points are split by a seeded
split (--holdout of them held out); the calibration (planner.calibrate) is fitted on the rest; every held-out
point is predicted three ways: calibrated, the measured profile it started from, and the datasheet profile.
Serving runs are never fitted (their own trace is not used): the simulator predicts them from each profile.
Memory: the engine's KV capacity (its `kv_cache` event) beside the memory model's, and any case that ran out
of memory although the planner says it fits.
--shipped directories (machines measured after the shipped profiles were fitted) are predicted by hw_profiles/ as
`plan` loads them, every point, nothing fitted: what a user of the shipped profiles can expect on another machine.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from planner import calibrate as cal  # noqa: E402
from planner.costmodel import Deployment  # noqa: E402
from planner.memory import memory_breakdown  # noqa: E402
from planner.schemas import HardwareProfile, ModelSpec  # noqa: E402
from planner.uncertainty import step_band  # noqa: E402
from profilers.refit import refit  # noqa: E402

KV_TARGET = 0.03
OUTLIER = 3.0
SERVING_METRICS = {"TTFT p50 ms": "median_ttft_ms", "TTFT p90 ms": "p90_ttft_ms", "TPOT p50 ms": "median_tpot_ms",
                   "output tok/s": "output_throughput"}


def profiles(step: dict, directory: Path | None = None) -> dict[str, HardwareProfile]:
    """label -> profile: the measured (or, for the CPU check, synthetic) one and the datasheet one. A directory's
    own `profile.yaml` (measured on the machine that ran its grid, in the same lease) is preferred to the
    catalog's measured profile."""
    if step.get("hardware_profile"):
        hw = HardwareProfile.model_validate(step["hardware_profile"])
        return {"measured": hw, "datasheet": hw.model_copy(update={"efficiency": type(hw.efficiency)()})}
    from planner import catalog
    gpu = step["meta"]["gpu"]
    own = directory / "profile.yaml" if directory is not None else None
    measured = HardwareProfile.load(own) if own is not None and own.is_file() else catalog.load_hardware(gpu, "measured")
    # fitted fields recomputed from the profile's raw rows: every machine read by the current fit
    return {"measured": refit(measured), "datasheet": catalog.load_hardware(gpu, "datasheet")}


def trace(directory: Path, name: str) -> Path | None:
    """A machine directory's trace file `name`, or its gzipped copy (the committed results keep large ones so)."""
    return next((f for f in (directory / name, directory / f"{name}.gz") if f.is_file()), None)


def stats(errors: list[float]) -> str:
    if not errors:
        return "n=0"
    a = np.abs(errors)
    return f"n={len(a)}, median {np.median(a):.1%}, p90 {np.percentile(a, 90):.1%}"


def step_section(name: str, c: cal.Calibration, base: dict[str, HardwareProfile], summary: dict) -> list[str]:
    test = c.test
    preds = {"calibrated": cal.predict_steps(c.profile, test)}
    preds.update({k: cal.predict_steps(hw, test) for k, hw in base.items()})
    lines = [f"### {name}: step level (held-out points)", "",
             f"Fitted on {len(c.train)} points, {len(test)} held out. Parameters: "
             + ", ".join(f"`{k}` {c.initial[k]:.3g} -> {v:.3g}" for k, v in c.params.items()), "",
             "| model | weights | TP | step | measured ms | " + " | ".join(f"{k} ms (err)" for k in preds) + " |",
             "|---|---|---|---|---|" + "---|" * len(preds)]
    errs = {k: [] for k in preds}
    for i, p in enumerate(test):
        b = p.batch
        what = (f"prefill {b.prefill_tokens}" if p.kind == "prefill" else
                f"decode {b.decode_seqs} x {b.decode_ctx_tokens // max(b.decode_seqs, 1)}" if p.kind == "decode"
                else f"mixed {b.prefill_tokens}+{b.decode_seqs}")
        cells = []
        for k, v in preds.items():
            e = p.time_s / v[i] - 1
            errs[k].append(e)
            cells.append(f"{v[i] * 1e3:.2f} ({e:+.1%})")
        lines.append(f"| {p.deployment.model.name} | {p.deployment.weight_dtype} | {p.deployment.tp} | {what} | "
                     f"{p.time_s * 1e3:.2f} | " + " | ".join(cells) + " |")
    lines += ["", "Relative error (measured / predicted - 1), absolute: "
              + "; ".join(f"**{k}** {stats(v)}" for k, v in errs.items()), ""]
    summary["steps"] = errs["calibrated"]
    kinds = sorted({p.kind for p in test})
    if len(kinds) > 1:
        lines += ["By kind (median / p90 of absolute error): " + "; ".join(
            f"{kind}: " + ", ".join(f"{k} {stats([e for p, e in zip(test, v) if p.kind == kind])}"
                                    for k, v in errs.items()) for kind in kinds), ""]
    if c.excluded:
        whys = sorted({why for _, why in c.excluded})
        lines += [f"Excluded from the fit and from the statistics above ({len(c.excluded)} points): "
                  + "; ".join(whys) + ". Measured / calibrated prediction: " + ", ".join(
                      f"{p.deployment.model.name} {p.deployment.weight_dtype} {p.kind} {p.batch.decode_seqs}x"
                      f"{p.batch.decode_ctx_tokens // max(p.batch.decode_seqs, 1)} {p.time_s * 1e3:.2f} / {t * 1e3:.2f} ms"
                      if p.kind == "decode" else f"{p.deployment.model.name} {p.deployment.weight_dtype} {p.kind} "
                      f"{p.batch.prefill_tokens} {p.time_s * 1e3:.2f} / {t * 1e3:.2f} ms"
                      for (p, _), t in zip(c.excluded, cal.predict_steps(c.profile, [p for p, _ in c.excluded]))), ""]
    return lines


def serving_steps_section(name: str, trace: Path, hws: dict[str, HardwareProfile]) -> list[str]:
    """The engine's own steps under the serving load (never fitted): each step's composition predicted by each
    profile. Separates per-step time errors from scheduling and queueing in the serving rows. Steps over
    OUTLIER x their prediction (first-seen shapes compiling) are counted, not scored."""
    points = cal.load_trace(trace)
    if not points:
        return []
    meas = np.array([p.time_s for p in points])
    lines = [f"### {name}: engine steps under serving load (never fitted)", "",
             f"{len(points)} steps of the serving runs' engine trace, each predicted from its composition.", "",
             "| steps | n | " + " | ".join(f"{k}: median err, p10..p90" for k in hws) + " |",
             "|---|---|" + "---|" * len(hws)]
    preds = {k: cal.predict_steps(hw, points) for k, hw in hws.items()}
    first = next(iter(preds.values()))
    ok = meas / first < OUTLIER
    for label, sel in (("decode-only", [p.kind == "decode" for p in points]),
                       ("with prefill", [p.kind != "decode" for p in points])):
        sel = np.array(sel) & ok
        if not sel.any():
            continue
        cells = []
        for k, pr in preds.items():
            e = meas[sel] / pr[sel] - 1
            cells.append(f"{np.median(e):+.1%}, {np.percentile(e, 10):+.1%}..{np.percentile(e, 90):+.1%}")
        lines.append(f"| {label} | {int(sel.sum())} | " + " | ".join(cells) + " |")
    bad = meas[~ok]
    lines += ["", f"Left out: {len(bad)} steps over {OUTLIER:g}x their prediction"
              + (f" ({', '.join(f'{t * 1e3:.0f} ms' for t in bad)}): each one stalls every request in flight." if len(bad)
                 else "."), ""]
    return lines


def server_section(name: str, trace: Path, doc: dict) -> list[str]:
    """Where the served runs spent time outside the engine's steps: the server's intake (client send to engine
    queue, matched in arrival order on the host's shared monotonic clock) and garbage collection. Traces
    without arrival times or a clock origin (engines before 2026-12-02c) have nothing to say."""
    recs = [r for r in cal._read_lines(trace) if "time_s" in r]
    origin = (doc.get("kv_cache") or {}).get("clock_origin_s")
    if origin is None or not recs or "arrivals_s" not in recs[0]:
        return []
    arrivals = [a for r in recs for a in r["arrivals_s"]]
    gc_s = sum(r.get("gc_s", 0.0) for r in recs)
    lines = [f"### {name}: the server around the engine", "",
             f"Garbage collection: {gc_s:.2f} s in all over {len(recs):,} steps (longest in one step "
             f"{max(r.get('gc_s', 0.0) for r in recs) * 1e3:.1f} ms); the longest step took "
             f"{max(r['time_s'] for r in recs) * 1e3:.0f} ms.", "",
             "| load | requests | intake p50 ms | intake p99 ms |", "|---|---|---|---|"]
    i = 0
    for run in doc.get("runs", []):
        samples = sorted(run.get("samples") or [], key=lambda x: x["i"])
        start = (run.get("client") or {}).get("clock_origin_s")
        n = run["config"]["load"]["num_requests"]
        mine, i = arrivals[i:i + n], i + n
        if start is None or len(samples) != len(mine):
            continue
        lag_ms = [((origin + a) - (start + x["t_start_s"])) * 1e3 for a, x in zip(mine, samples)]
        lines.append(f"| {run.get('load_fraction')} | {n} | {np.median(lag_ms):.2f} | {np.percentile(lag_ms, 99):.2f} |")
    return lines + [""]


def serving_section(name: str, runs: list[dict], hws: dict[str, HardwareProfile], capacity: float | None,
                    summary: dict) -> list[str]:
    """Each run predicted by each profile; the first profile's interval is the simulator at its step-time band
    (planner.uncertainty: queueing magnifies step errors), and `in` says whether the measurement is inside."""
    first = next(iter(hws))
    lo, hi = step_band(hws[first])
    lines = [f"### {name}: serving level (never fitted)", "",
             f"Load: the nominal fraction of the planner's predicted capacity ({capacity or 0:.2f} req/s) and the "
             "realised one (the run's own arrival times: a few hundred Poisson arrivals stray several percent from "
             f"the nominal rate). Interval: the simulator with every step {1 + lo:.2f}x and {1 + hi:.2f}x the "
             f"{first} step time (5th-95th percentile of its held-out step errors).", "",
             "| load | realised | requests | metric | measured | " + " | ".join(hws) + f" | {first} interval | in |",
             "|---|---|---|---|---|" + "---|" * len(hws) + "---|---|"]
    errs = {k: [] for k in hws}
    by_metric = {label: {k: [] for k in hws} for label in SERVING_METRICS}
    inside = []
    for run in runs:
        sims = {k: cal.simulate_run(hw, run) for k, hw in hws.items()}
        ends = [cal.simulate_run(hws[first], run, step_scale=1 + x) for x in (lo, hi)]
        cfg = run["config"]["load"]
        realised = (run.get("client") or {}).get("scheduled_rate_rps")
        realised = f"{realised / capacity:.2f}" if realised and capacity else "-"
        for label, key in SERVING_METRICS.items():
            m = run["metrics"].get(key)
            cells = []
            for k, sim in sims.items():
                p = sim.get(key)
                ok = m is not None and p
                cells.append(f"{p:.1f} ({m / p - 1:+.1%})" if ok else "-")
                if ok:
                    errs[k].append(m / p - 1)
                    by_metric[label][k].append(m / p - 1)
            a, b = sorted(e.get(key) or math.nan for e in ends)
            within = m is not None and a <= m <= b
            inside.append(within)
            lines.append(f"| {run.get('load_fraction', '')} | {realised} | {cfg.get('num_requests')} | {label} | "
                         f"{m if m is None else round(m, 2)} | " + " | ".join(cells) + f" | {a:.1f}-{b:.1f} | "
                         f"{'yes' if within else 'no'} |")
    lines += ["", "Absolute relative error over all rows: " + "; ".join(f"**{k}** {stats(v)}" for k, v in errs.items()),
              "", f"Measured inside the {first} interval: {sum(inside)} of {len(inside)} rows.", ""]
    summary.update(serving={label: by_metric[label][first] for label in SERVING_METRICS}, inside=inside)
    lines += ["Per metric, median absolute error over the loads: " + "; ".join(
        f"{label}: " + ", ".join(f"{k} {np.median(np.abs(v)):.1%}" for k, v in by_metric[label].items() if v)
        for label in SERVING_METRICS), ""]
    return lines


def memory_section(name: str, step: dict, hw: HardwareProfile) -> list[str]:
    lines = [f"### {name}: memory", "", "| model | weights | TP | engine KV tokens | predicted KV tokens | error | "
             "planner: fits | ran |", "|---|---|---|---|---|---|---|---|"]
    bad = []
    for case in step["cases"]:
        if "kv_cache" not in case and "error" not in case:
            continue
        spec = ModelSpec.model_validate(step_model(step, case))
        eng = case.get("engine") or {}
        d = Deployment(spec, case["tp"], 1, case["weight_dtype"], case.get("kv_dtype", "bf16"))
        mem = memory_breakdown(hw, d, eng.get("max_num_batched_tokens", 8192), eng.get("max_num_seqs", 256),
                               eng.get("gpu_memory_utilization", 0.9), 1, eng.get("block_size", 16))
        kv = (case.get("kv_cache") or {}).get("kv_capacity_tokens")
        err = f"{kv / mem.kv_capacity_tokens - 1:+.1%}" if kv and mem.kv_capacity_tokens else "-"
        ran = "OOM" if case.get("oom") else ("error" if "error" in case else "ok")
        if mem.fits and ran == "OOM":
            bad.append(f"{spec.name} {case['weight_dtype']} TP{case['tp']}")
        lines.append(f"| {spec.name} | {case['weight_dtype']} | {case['tp']} | {kv or '-'} | {mem.kv_capacity_tokens} | "
                     f"{err} | {mem.fits} | {ran} |")
    lines += ["", f"Target: within {KV_TARGET:.0%}. Planned as fitting but out of memory: "
              + (", ".join(bad) if bad else "none") + ".", ""]
    return lines


def step_model(step: dict, case: dict) -> dict:
    """The model spec a case ran (the trace's config lines carry it; the catalog knows the real shapes)."""
    if step.get("hardware_profile"):
        from backends.engine.config import TINY
        return TINY.model_dump()
    from planner.catalog import load_model
    return load_model(case["model"]).model_dump()


def serving_only(directory: Path, calibrated: dict[str, dict[str, HardwareProfile]],
                 latest: dict[str, tuple[str, Path]], holdout: float, seed: int, summary: dict) -> list[str]:
    """A directory of served runs alone (another engine setting on a GPU calibrated above): its runs predicted by
    the calibration of the last machine of that GPU listed before it (so the engine it describes) and the
    profiles it started from, never fitted. With its own `serving_fit_trace.jsonl` that calibration is fitted
    again, on that machine's steps and this fit run's (the server's own host work shows only there)."""
    doc = json.loads((directory / "serving.json").read_text())
    gpu = doc["meta"].get("gpu") or "CPU (tiny)"
    if gpu not in latest:
        return [f"## {directory.name}", "", f"No step grid of {gpu} in this report to predict these runs with.", ""]
    features = ", ".join(f"{k} {v}" for k, v in (doc.get("kv_cache") or {}).items() if k == "async_scheduling")
    name = f"{gpu} ({directory.name}: {features or 'serving runs'})"
    source, source_dir = latest[gpu]
    hws = calibrated[source]
    fit = trace(directory, "serving_fit_trace.jsonl")
    how = "fitted on synchronous-engine steps only"
    if fit:
        c = cal.calibrate(hws["measured"], [trace(source_dir, "step_trace.jsonl")], holdout=holdout, seed=seed,
                          fit_traces=[fit])
        hws = {**hws, "calibrated": c.profile}
        how = f"fitted again with this directory's {fit.name}"
    lines = [f"## {name}", "", f"Machine: {doc['meta'].get('device_name')}, {doc['meta'].get('date')}; "
             f"`{doc['meta'].get('command')}`. Predicted by the {source} calibration above ({how}).", ""]
    summary["machine"] = name
    lines += serving_section(name, cal.load_runs(directory / "serving.json"), hws, doc.get("predicted_capacity_rps"),
                             summary)
    served = trace(directory, "serving_trace.jsonl")
    lines += serving_steps_section(name, served, hws)
    return lines + server_section(name, served, doc)


def transfer_section(name: str, gpu: str, points: list[cal.StepPoint], other: HardwareProfile) -> list[str]:
    """Every step of this machine predicted by another machine's calibration of the same GPU type: what a user
    whose GPU is not the one calibrated can expect."""
    errors = step_errors(other, points)
    return ([f"### {name}: predicted by the {gpu} calibration above (another machine)", "",
             f"All {len(points)} step points of this machine, none fitted, predicted by the calibration of the "
             f"{gpu} section above (fitted on its machine's grid).", ""]
            + by_model_table(points, errors) + ["", f"All points: {stats(errors)}.", ""])


def step_errors(hw: HardwareProfile, points: list[cal.StepPoint]) -> list[float]:
    """measured / predicted - 1 for each point, predicted by `hw`."""
    return list(np.array([p.time_s for p in points]) / cal.predict_steps(hw, points) - 1)


def by_model_table(points: list[cal.StepPoint], errors: list[float]) -> list[str]:
    """Each point's error (measured / predicted - 1) summarised per model and weight dtype."""
    by: dict[str, list[float]] = {}
    for p, e in zip(points, errors):
        by.setdefault(f"{p.deployment.model.name} {p.deployment.weight_dtype}", []).append(e)
    lines = ["| model | points | median error | median abs error | p90 abs error |", "|---|---|---|---|---|"]
    for k, v in by.items():
        a = np.abs(v)
        lines.append(f"| {k} | {len(v)} | {np.median(v):+.1%} | {np.median(a):.1%} | {np.percentile(a, 90):.1%} |")
    return lines


# The machines the shipped H200 calibration is fitted on (the Reproduce recipe).
SHIPPED_FIT = tuple(f"benchmarks/results/accuracy/H200-grid{n}" for n in (16, 17, 18))


def fitted_by(profile: HardwareProfile, directory: Path) -> bool:
    """Whether the calibration of `profile` read a file of `directory` (its provenance lists what it was fitted on)."""
    return any(Path(f).parent.resolve() == directory.resolve() for f in profile.provenance.data_files or ())


def shipped_section(directory: Path, summary: dict) -> list[str]:
    """A `--shipped` directory: all its step points and served runs predicted by the profiles in hw_profiles/ as a
    user gets them, nothing refitted. The shipped calibration may have been fitted on this machine's steps (its
    provenance says), or on none of them: a machine it never saw."""
    from planner import catalog
    step_file, serving = directory / "step.json", directory / "serving.json"
    meta_doc = json.loads((step_file if step_file.exists() else serving).read_text())
    gpu = meta_doc["meta"].get("gpu") or "CPU (tiny)"
    hws = {k: catalog.load_hardware(gpu, k) for k in ("calibrated", "measured", "datasheet")}
    fitted = fitted_by(hws["calibrated"], directory)
    name = f"{gpu} ({directory.name}: the shipped profiles, {'fitted on its steps' if fitted else 'nothing fitted'})"
    summary["machine"] = name
    how = (f"The shipped {gpu} calibration was fitted on this machine's steps (a seeded share of its step grid and "
           "its served fit run, pooled with other machines'; hw_profiles/calibrated lists them); its served runs "
           "below were not fitted." if fitted else f"Measured after the shipped {gpu} profiles were fitted, on a "
           "machine they never saw.")
    lines = [f"## {name}", "", f"Machine: {meta_doc['meta'].get('device_name')}, {meta_doc['meta'].get('date')}; "
             f"`{meta_doc['meta'].get('command')}`. {how} Predicted by the shipped profiles as `plan` loads them "
             "(hw_profiles/calibrated, hw_profiles/measured, the datasheet).", ""]
    steps = trace(directory, "step_trace.jsonl")
    if steps:
        points = cal.load_trace(steps)
        kept = [p for p in points if cal.excluded_why(p) is None]
        errs = {k: step_errors(hw, kept) for k, hw in hws.items()}
        lines += [f"### {name}: step level (every point)", "",
                  f"All {len(kept)} step points"
                  + (f" ({len(points) - len(kept)} more excluded as the fit excludes them)" if len(kept) < len(points)
                     else "") + ", predicted by the shipped calibrated profile:", ""]
        lines += by_model_table(kept, errs["calibrated"])
        lines += ["", "Relative error, absolute: " + "; ".join(f"**{k}** {stats(v)}" for k, v in errs.items()), ""]
        not_run = [f"{c['model']} {c['weight_dtype']} TP{c['tp']}" for c in meta_doc["cases"]
                   if not c.get("points") and "error" not in c]
        if not_run:
            lines += ["Not reached within the grid's GPU budget: " + ", ".join(not_run) + ".", ""]
        summary["steps"] = errs["calibrated"]
        # cases past the GPU budget never ran: they prefilled nothing
        summary["random_ids"] = all(case.get("prompt_ids") == "random" for case in meta_doc["cases"] if case.get("points"))
    if serving.exists():
        doc = json.loads(serving.read_text())
        lines += serving_section(name, cal.load_runs(serving), hws, doc.get("predicted_capacity_rps"), summary)
        served = trace(directory, "serving_trace.jsonl")
        if served:
            lines += serving_steps_section(name, served, hws) + server_section(name, served, doc)
    if step_file.exists():
        lines += memory_section(name, meta_doc, hws["measured"])
    return lines


def pooled_section(name: str, base: HardwareProfile, traces: list[Path], fit: list[Path], holdout: float,
                   seeds: range, first: cal.Calibration, summary: dict) -> list[str]:
    """One split is luck of the draw: every held-out point of `seeds` splits (each fitted on its own training
    half; `first` is the one reported above), pooled."""
    errors = []
    for s in seeds:
        c = first if s == seeds[0] else cal.calibrate(base, traces, holdout=holdout, seed=s, fit_traces=fit)
        errors += [p.time_s / t - 1 for p, t in zip(c.test, cal.predict_steps(c.profile, c.test))]
    summary["pooled"] = errors
    return [f"Pooled over {len(seeds)} seeded splits (seeds {seeds[0]}-{seeds[-1]}, each calibrated on its own "
            f"training points): **calibrated** {stats(errors)}.", ""]


def machine(directory: Path, holdout: float, seed: int, calibrated: dict[str, dict[str, HardwareProfile]],
            latest: dict[str, tuple[str, Path]], pooled: int = 1, summary: dict | None = None) -> list[str]:
    """This machine's sections; `summary` gets its headline errors (for the summary table)."""
    summary = {} if summary is None else summary
    if not (directory / "step.json").exists():
        return serving_only(directory, calibrated, latest, holdout, seed, summary)
    step = json.loads((directory / "step.json").read_text())
    base = profiles(step, directory)
    name = step["meta"].get("gpu") or "CPU (tiny)"
    if (directory / "profile.yaml").is_file() and directory.name != name:   # one of several machines of a kind
        name = f"{name} ({directory.name})"
    fit = [f for f in [trace(directory, "serving_fit_trace.jsonl")] if f]
    steps = [trace(directory, "step_trace.jsonl")]
    c = cal.calibrate(base["measured"], steps, holdout=holdout, seed=seed, fit_traces=fit)
    calibrated[name] = {"calibrated": c.profile, **base}
    latest[step["meta"].get("gpu") or "CPU (tiny)"] = (name, directory)
    lines = [f"## {name}", "", f"Machine: {step['meta'].get('device_name')} x{step['meta'].get('device_count')}, "
             f"{step['meta'].get('date')}; `{step['meta'].get('command')}`", ""]
    if (directory / "profile.yaml").is_file():
        lines += [f"Its profile, step grid and served runs were measured on one GPU in one lease; `{directory.name}/"
                  "profile.yaml` is that machine's measured profile, which the calibration starts from.", ""]
    summary.update(machine=name, random_ids=all(case.get("prompt_ids") == "random" for case in step["cases"]))
    if not summary["random_ids"]:
        lines += ["Its prefill and mixed points prefilled prompts of one repeated token id, whose GEMM rows are all "
                  "alike: such prompts ran faster than served ones of random ids (Llama-3.1-8B, 1,024 / 4,096 tokens: "
                  "22.0 / 94.8 against 24.5 / 109.3 ms; `engine_probes.py --only rows`). Grids since H200-grid14 "
                  "prefill random ids.", ""]
    lines += step_section(name, c, base, summary)
    if pooled > 1:
        lines += pooled_section(name, base["measured"], steps, fit, holdout,
                                range(seed, seed + pooled), c, summary)
    gpu = step["meta"].get("gpu")
    if name != gpu and gpu in calibrated:
        lines += transfer_section(name, gpu, c.train + c.test, calibrated[gpu]["calibrated"])
    serving = directory / "serving.json"
    if serving.exists() and "runs" in json.loads(serving.read_text()):
        doc = json.loads(serving.read_text())
        lines += serving_section(name, cal.load_runs(serving), {"calibrated": c.profile, **base},
                                 doc.get("predicted_capacity_rps"), summary)
    served = trace(directory, "serving_trace.jsonl")
    if served:
        lines += serving_steps_section(name, served, {"calibrated": c.profile, **base})
        if serving.exists():
            lines += server_section(name, served, json.loads(serving.read_text()))
    lines += memory_section(name, step, base["measured"])
    return lines


def summary_table(summaries: list[dict], seed: int) -> list[str]:
    """One row per machine: its calibrated profile's headline errors (each machine's section has the points)."""
    def cell(errors) -> str:
        return f"{np.median(np.abs(errors)):.1%} / {np.percentile(np.abs(errors), 90):.1%}" if errors else ""

    lines = ["## Summary", "", "Absolute errors of each machine's calibrated profile: held-out steps (median / p90, seed "
             f"{seed} and pooled over the seeded splits), and served runs (median over the loads, never fitted). Step "
             "grids marked * prefilled prompts of one repeated id, which run faster than served prompts (see their "
             "sections). Rows of \"the shipped profiles\" are every step point (in the seed-split column) and every "
             "served run of a machine predicted by the shipped calibrated profile: \"nothing fitted\" a machine it "
             "never saw, \"fitted on its steps\" one whose steps it was fitted on (its served runs were not).", "",
             "| machine | steps, seed split | steps, pooled | " + " | ".join(SERVING_METRICS) + " | served rows in interval |",
             "|---|---|---|" + "---|" * len(SERVING_METRICS) + "---|"]
    for sm in summaries:
        if "machine" not in sm:
            continue
        serving = sm.get("serving") or {}
        mark = "" if sm.get("random_ids", True) else " *"
        inside = sm.get("inside")
        lines.append(f"| {sm['machine']}{mark} | {cell(sm.get('steps'))} | {cell(sm.get('pooled'))} | "
                     + " | ".join(f"{np.median(np.abs(serving[m])):.1%}" if serving.get(m) else "" for m in SERVING_METRICS)
                     + f" | {f'{sum(inside)} of {len(inside)}' if inside else ''} |")
    return lines + [""]


def report(dirs: list[Path], holdout: float, seed: int, pooled: int = 1, shipped: list[Path] = ()) -> str:
    lines = ["# Cost-model accuracy: predicted vs measured", "",
             "Produced by `benchmarks/accuracy_report.py` from the raw output of `benchmarks/bench_accuracy.py` "
             "(built-in engine, dummy weights). Error = measured / predicted - 1. Step points are split by a seeded "
             f"split (holdout {holdout:.0%}, seed {seed}); calibration (`plan calibrate`, planner/calibrate.py) "
             "is fitted on the rest, and the held-out points are predicted by the calibrated profile, the measured "
             "profile it started from, and the datasheet profile. Where the machine has a `serving_fit_trace.jsonl` "
             "(a fourth served run, at another load and seed, made only for this), its engine steps, bucketed by "
             "composition, are fitted too: they are what shows the server's own per-sequence host work. The "
             "serving runs reported are never fitted.", ""]
    calibrated: dict[str, dict[str, HardwareProfile]] = {}
    latest: dict[str, tuple[str, Path]] = {}     # GPU -> the last machine of it calibrated so far, and its directory
    sections, summaries = [], []
    for d in dirs:
        summaries.append({})
        sections += machine(d, holdout, seed, calibrated, latest, pooled, summaries[-1])
    for d in shipped:
        summaries.append({})
        sections += shipped_section(d, summaries[-1])
    lines += summary_table(summaries, seed) + sections
    lines += ["## Reproduce", "", "```bash",
              "# one GPU (~4 min; what made the H200 section: bash benchmarks/gpu_session.sh grid2, then serving):",
              "python benchmarks/bench_accuracy.py --out-dir $OUT --gpu-budget-s 200 --tp 1",
              "# one lease, its own profile (H200-one-machine, H200-tuned: + served runs; H200-70b: the 70B fp8 case;",
              "# H200-grid3: after the profiler timed bf16 GEMMs as the engine's tuned linears run them):",
              "bash benchmarks/gpu_session.sh machine    # or: grid70, grid3",
              "# served runs with async scheduling (H200-async2, -async3):",
              "bash benchmarks/gpu_session.sh serving_async",
              "# H200-grid12 (served async runs, then profile and step grid, one machine) and H200-async5:",
              "bash benchmarks/gpu_session.sh served; bash benchmarks/gpu_session.sh grid9   # and: buckets",
              "# H200-grid13 (the engine with finer decode graphs; served async runs, then profile and step grid):",
              "bash benchmarks/gpu_session.sh serving_async; bash benchmarks/gpu_session.sh grid9",
              "# H200-grid14 (prompts of random ids; repeated vs random rows, profile, step grid, served async runs):",
              "bash benchmarks/gpu_session.sh rows; bash benchmarks/gpu_session.sh step; "
              "bash benchmarks/gpu_session.sh serving_async",
              "# H200-grid15 (the engine racing buckets above 2,048 tokens; profile, step grid, served async runs):",
              "bash benchmarks/gpu_session.sh profile; bash benchmarks/gpu_session.sh step; "
              "bash benchmarks/gpu_session.sh serving_async",
              "# H200-async8 (served async runs on another machine, predicted by H200-grid15's calibration):",
              "bash benchmarks/gpu_session.sh serving_async",
              "# H200-grid16 (the engine with the TMA GEMV and RMSNorms folded into the GEMVs; profile, step grid, served",
              "# async runs):",
              "bash benchmarks/gpu_session.sh profile; bash benchmarks/gpu_session.sh step; "
              "bash benchmarks/gpu_session.sh serving_async",
              "# several GPUs add the TP 2 / 4 cases:",
              "python benchmarks/bench_accuracy.py --out-dir $OUT --gpu-budget-s 240",
              "# H200-grid17 and H200-async9 (machines measured after H200-grid16's calibration was fitted; the step grid",
              "# and served async runs on one, served async runs on another):",
              "bash benchmarks/gpu_session.sh recheck; bash benchmarks/gpu_session.sh serving_async",
              "# H200-grid18 (a third such machine: the grid's two cases H200-grid17 did not reach, and served async runs):",
              "MODELS=1b,70b DTYPES=fp8 bash benchmarks/gpu_session.sh recheck",
              "# H200-grid19 and -grid20 (two more machines, after the shipped calibration was fitted on the first three):",
              "bash benchmarks/gpu_session.sh recheck   # once on each",
              "# here (no GPU), from the committed raw output:",
              "python benchmarks/accuracy_report.py " + " ".join(str(d) for d in dirs)
              + (" --shipped " + " ".join(str(d) for d in shipped) if shipped else "") + " --out ACCURACY.md",
              "# the shipped profiles: H200-grid16's measured profile with the 4x H200 collectives, calibrated on the",
              "# steps and served async steps of three machines (H200-grid16, -grid17, -grid18; the current engine):",
              "cp benchmarks/results/accuracy/H200-grid16/profile.yaml hw_profiles/measured/H200.yaml  # then:",
              "python benchmarks/merge_collectives.py benchmarks/results/accuracy/H200/profile.yaml "
              "hw_profiles/measured/H200.yaml",
              "plan calibrate --gpu h200 --profile measured " + " ".join(
                  f"--trace {d}/step_trace.jsonl --fit-trace {d}/serving_fit_trace.jsonl --run {d}/serving.json"
                  for d in SHIPPED_FIT) + " --out hw_profiles/calibrated/H200.yaml", "```", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", type=Path, help="bench_accuracy.py output directories, one per machine")
    p.add_argument("--shipped", nargs="*", type=Path, default=[],
                   help="directories measured after the shipped profiles were fitted: predicted by them, nothing fitted")
    p.add_argument("--out", type=Path, default=Path("ACCURACY.md"))
    p.add_argument("--holdout", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pooled-splits", type=int, default=4,
                   help="also pool the held-out steps of this many seeded splits, from --seed (1: only one split)")
    a = p.parse_args(argv)
    a.out.write_text(report(a.dirs, a.holdout, a.seed, a.pooled_splits, a.shipped))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
