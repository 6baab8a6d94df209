"""Calibrate a hardware profile's efficiency parameters from measured engine runs.

Data: engine step traces (JSON lines, one per step: `docs/engine.md`) and `plan bench run` JSON documents.
A few physically meaningful parameters are fitted by least squares on log(step time):

    step_overhead_s          host work per engine step (scheduling, inputs, sampling, the sync)
    per_seq_overhead_s       host work per sequence in a step (grows the step with the batch)
    served_per_seq_overhead_s  more of it behind the streaming HTTP server (seen only in served traces)
    async_hidden_fraction    the share of host work async scheduling hides behind the GPU (seen only in async traces)
    graph_kernel_overhead_s  issue interval of a kernel replayed from a CUDA graph (decode floor)
    kernel_overhead_s        host issue interval of an eager kernel (prefill / mixed steps: launch bound when small)
    attention_compute        prefill attention, fraction of bf16 peak (the scalar, for profiles without a curve)
    attention_compute_scale  multiplies prefill attention's efficiency (its measured curve by length, or the scalar)
    attention_memory         decode attention, fraction of bandwidth
    attention_decode_latency_s  its fixed time per call (the profile measures ~8 us on an H200; fitted, it also
                             takes up other fixed per-layer time of a decode step that the kernels' curves miss)
    fp8_gemv_memory          the engine's weight-only fp8 decode GEMV at one row, fraction of bandwidth
    fp8_gemv_rows_memory     ... at 2-16 rows (another kernel)
    fp8_gemv_latency_s       fixed time of one such GEMV beyond its stream (small layers stream slower)
    gemm_compute_scale       multiplies every GEMM compute-efficiency curve of the profile
    gemm_knee                softness of the GEMM roofline corner (0: max of compute and memory time)
    memory_scale             multiplies every bandwidth-efficiency curve (copies, weight streaming, dequantize)

Parameters are bounded to physically sensible ranges (PARAM_BOUNDS); DEFAULT_PARAMS fits most of them.
Points the engine ran on a path the model does not describe are left out of fit and test (excluded_why:
fp8 decode in traces of engines before 2026-12-02) and reported as such.
Steps are grouped into points (a trace record's `point` id, else one step per point); the median step time
of a point is one observation, and a seeded split holds out whole points. A weak prior pulls each parameter
towards the profile's value, so one the data cannot see (eager launches in a decode-only trace) stays put.
Bench runs are never fitted: the calibrated profile predicts each run through the simulator and the
relative errors (measured / predicted - 1, as planner.uncertainty reads them) become `residuals`.

No torch: this runs wherever the planner does.
"""
from __future__ import annotations

import datetime as dt
import gzip
import json
import math
import random
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from planner.costmodel import COMPUTE_DTYPE, Batch, Deployment, Hardware, step_time_s
from planner.errors import UsageError
from planner.schemas import HardwareProfile, LengthDist, ModelSpec, Plan, Workload

# name -> (low, high) bounds, physically sensible ranges; scalars are efficiency fields, *_scale multiply the
# profile's curves. (Parameters are fitted in log space: a lower bound stands in for 0.)
PARAM_BOUNDS = {
    "step_overhead_s": (1e-6, 5e-3),
    "per_seq_overhead_s": (1e-9, 5e-5),
    "served_per_seq_overhead_s": (1e-9, 2e-4),
    "async_hidden_fraction": (1e-3, 1.0),
    "graph_kernel_overhead_s": (1e-7, 2e-5),
    "kernel_overhead_s": (1e-6, 5e-4),
    "attention_compute": (0.2, 0.9),
    "attention_compute_scale": (0.5, 2.0),
    "attention_memory": (0.2, 1.0),
    "attention_decode_latency_s": (1e-8, 3e-5),
    "fp8_gemv_memory": (0.2, 1.0),
    "fp8_gemv_rows_memory": (0.1, 1.0),
    "fp8_gemv_latency_s": (1e-8, 2e-5),
    "gemm_compute_scale": (0.5, 1.5),
    "gemm_knee": (1e-3, 0.5),
    "memory_scale": (0.5, 1.2),
}
# Fitted by default: what the step traces can tell apart. graph_kernel_overhead_s (a constant per decode
# step, like step_overhead_s) keeps the profile's value unless named.
DEFAULT_PARAMS = ("step_overhead_s", "per_seq_overhead_s", "served_per_seq_overhead_s", "async_hidden_fraction",
                  "kernel_overhead_s",
                  "attention_compute_scale",
                  "attention_memory", "attention_decode_latency_s", "memory_scale", "gemm_compute_scale", "fp8_gemv_memory",
                  "fp8_gemv_rows_memory", "fp8_gemv_latency_s", "gemm_knee")
# A second start for parameters that sit in a flat region at the profile's value: eager launches hidden behind
# GPU time (max(GPU, launches x interval) has no slope there), a hard roofline corner (no slope at knee 0), and
# a fraction at its floor (async_hidden_fraction 0.001 changes no step: no slope in log space).
ALTERNATIVE_START = {"kernel_overhead_s": 3e-5, "gemm_knee": 0.15, "fp8_gemv_latency_s": 5e-6,
                     "async_hidden_fraction": 0.5}
PRIOR_WEIGHT = 1e-6          # squared, per parameter, on log(value / initial): only pins parameters the data cannot see
ROBUST_SCALE = 0.05          # soft-L1 knee on log-time residuals: points off by more than ~5% count linearly
# bench metric -> residual key planner.uncertainty reads
RUN_METRICS = {"ttft": "mean_ttft_ms", "tpot": "mean_tpot_ms", "e2e": "mean_e2el_ms",
               "throughput": "output_throughput"}


def excluded_why(p: "StepPoint") -> str | None:
    """Why a point is left out of the fit and of the held-out statistics: steps the engine ran on a path the
    cost model does not describe. The model prices fp8 decode as the engine runs it since 2026-12-02 (weight-only
    GEMV up to 16 rows, `fp8_gemv_memory`); traces of older engines (their config line has no
    `varlen_prefill`) ran fp8 decode through other kernels."""
    if (p.kind == "decode" and COMPUTE_DTYPE.get(p.deployment.weight_dtype) == "fp8"
            and not p.deployment.varlen_prefill):
        return "fp8 decode recorded by an engine before 2026-12-02, whose fp8 decode kernels the model does not describe"
    return None


@dataclass(frozen=True)
class StepPoint:
    """One observation: a step composition on a deployment, and its measured wall time."""
    deployment: Deployment
    batch: Batch
    time_s: float
    group: str                          # the unit of the held-out split
    steps: int = 1                      # measured steps behind the median

    @property
    def kind(self) -> str:
        if self.batch.prefill_tokens and self.batch.decode_seqs:
            return "mixed"
        return "prefill" if self.batch.prefill_tokens else "decode"


@dataclass
class Calibration:
    profile: HardwareProfile            # the calibrated copy
    params: dict[str, float]
    initial: dict[str, float]
    train: list[StepPoint]
    test: list[StepPoint]
    residuals: dict[str, list[float]]   # metric -> measured / predicted - 1 (held-out steps, bench runs)
    rows: list[dict] = field(default_factory=list)   # per held-out observation, for reports
    excluded: list[tuple[StepPoint, str]] = field(default_factory=list)   # left out of fit and test, and why


# --------------------------------------------------------------------------- reading data
def batch_of(rec: dict) -> Batch:
    """The composition of one trace record (`prefill_context_lens` is the context after the chunk)."""
    prefills = [(q, c - q) for q, c in zip(rec.get("prefill_query_lens") or [], rec.get("prefill_context_lens") or [])]
    b = Batch.of(prefills)
    return replace(b, decode_seqs=int(rec.get("num_decode_seqs") or 0),
                   decode_ctx_tokens=int(rec.get("decode_context_len_sum") or 0))


def deployment_from(cfg: dict) -> Deployment:
    """A trace `config` record: model (catalog name or a ModelSpec dict), tp, weight_dtype, kv_dtype."""
    model = cfg.get("model")
    if isinstance(model, dict):
        spec = ModelSpec.model_validate(model)
    elif isinstance(model, str):
        from planner.catalog import load_model
        spec = load_model(model)
    else:
        raise UsageError("a trace config record needs `model` (a catalog name or a model spec)")
    from planner.predict import engine_features
    return Deployment(spec, int(cfg.get("tp", 1)), 1, cfg.get("weight_dtype", "bf16"), cfg.get("kv_dtype", "bf16"),
                      bool(cfg.get("cuda_graphs", True)), served=bool(cfg.get("served", False)),
                      **engine_features(cfg))


def _read_lines(path: Path) -> list[dict]:
    """JSON lines of a trace file, gzipped when its name ends in .gz (how the committed results keep them)."""
    if not path.is_file():
        raise UsageError(f"no such trace file: {path}")
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    records = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{i}: not a JSON line ({e.msg})") from None
    return records


def load_trace(path: str | Path, default: Deployment | None = None) -> list[StepPoint]:
    """Points of one trace file. `{"event": "config", ...}` lines set the deployment of the steps after them
    (else `default`); steps marked `"warmup": true` are left out; other events are ignored."""
    path = Path(path)
    current, config_index = default, 0
    groups: dict[str, list[tuple[Deployment, dict]]] = {}
    for rec in _read_lines(path):
        if rec.get("event") == "config":
            current, config_index = deployment_from(rec), config_index + 1
            continue
        if "event" in rec or "time_s" not in rec or rec.get("warmup"):
            continue
        if current is None:
            raise UsageError(f"{path}: steps without a model: give --model or a config line in the trace")
        # Decode-only steps without a graph ran eagerly: their kernels issue at the eager rate.
        eager = not rec.get("num_prefill_tokens") and rec.get("cuda_graph_batch_size") is None
        d = replace(current, cuda_graphs=False) if eager else current
        key = f"{path.name}:{config_index}:{rec['point']}" if "point" in rec else f"{path.name}:{rec.get('step')}"
        groups.setdefault(key, []).append((d, rec))
    points = []
    for key, recs in groups.items():
        recs.sort(key=lambda r: r[1]["time_s"])
        d, mid = recs[len(recs) // 2]
        if batch_of(mid).tokens:
            points.append(StepPoint(d, batch_of(mid), float(mid["time_s"]), key, len(recs)))
    if not points:
        raise UsageError(f"{path}: no engine steps in the trace")
    return points


def load_runs(path: str | Path) -> list[dict]:
    """The runs of a `plan bench run --json` document, or of benchmarks/bench_accuracy.py's serving.json
    (`runs`, sharing its `model_spec` and `kv_cache`)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such run file: {path}")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: not JSON ({e.msg})") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: not a bench run")
    shared = {k: doc[k] for k in ("model_spec", "kv_cache") if doc.get(k)}
    runs = [{**shared, **r} for r in doc["runs"]] if "runs" in doc else [doc]
    runs = [r for r in runs if r.get("plan") and r.get("metrics") and r["metrics"].get("completed")]
    if not runs:
        raise UsageError(f"{path}: no completed bench run (needs `plan` and `metrics`)")
    return runs


# --------------------------------------------------------------------------- the parameters
def initial_params(hw: HardwareProfile, names=DEFAULT_PARAMS) -> dict[str, float]:
    e = hw.efficiency
    return {n: 1.0 if n.endswith("_scale") else float(getattr(e, n)) for n in names}


def _scaled(curves: dict, factor: float) -> dict:
    return {k: [{"x": p.x, "y": p.y * factor} for p in v] for k, v in curves.items()}


def apply_params(hw: HardwareProfile, params: dict[str, float]) -> HardwareProfile:
    """A copy of `hw` with the parameters in its efficiency fields (scales multiply the curves)."""
    e = hw.efficiency
    update = {k: v for k, v in params.items() if not k.endswith("_scale")}
    c = params.get("gemm_compute_scale", 1.0)
    if c != 1.0:
        update.update(gemm={k: v * c for k, v in e.gemm.items()}, gemm_by_m=_scaled(e.gemm_by_m, c),
                      gemm_compute_by_m=_scaled(e.gemm_compute_by_m, c))
    a = params.get("attention_compute_scale", 1.0)
    if a != 1.0:
        update.update(attention_compute=min(1.0, e.attention_compute * a),
                      attention_compute_by_len={k: [{"x": p.x, "y": min(1.0, p.y * a)} for p in v]
                                                for k, v in e.attention_compute_by_len.items()})
    m = params.get("memory_scale", 1.0)
    if m != 1.0:
        update.update(memory=e.memory * m, memory_by_bytes=[{"x": p.x, "y": p.y * m} for p in e.memory_by_bytes],
                      gemm_memory_by_bytes=_scaled(e.gemm_memory_by_bytes, m), dequant_memory=e.dequant_memory * m,
                      fp8_gemv_by_bytes=[{"x": p.x, "y": p.y * m} for p in e.fp8_gemv_by_bytes])
    eff = e.model_validate({**e.model_dump(), **update})
    return hw.model_copy(update={"efficiency": eff})


def predict_steps(hw: HardwareProfile, points: list[StepPoint]) -> np.ndarray:
    h = Hardware(hw)                    # a fresh lookup object per parameter set (no global cache growth)
    return np.array([step_time_s(h, p.deployment, p.batch) for p in points])


def split(points: list[StepPoint], holdout: float, seed: int) -> tuple[list[StepPoint], list[StepPoint]]:
    """Seeded split by point group; at least one point on each side when there are two or more."""
    keys = sorted({p.group for p in points})
    random.Random(seed).shuffle(keys)
    n_test = min(len(keys) - 1, max(1, round(holdout * len(keys)))) if holdout > 0 and len(keys) > 1 else 0
    test_keys = set(keys[:n_test])
    return [p for p in points if p.group not in test_keys], [p for p in points if p.group in test_keys]


def fit(hw: HardwareProfile, points: list[StepPoint], names=DEFAULT_PARAMS) -> dict[str, float]:
    """Least squares on log(predicted / measured), robust (soft L1), parameters in log space, with the prior."""
    from scipy.optimize import least_squares

    unknown = set(names) - set(PARAM_BOUNDS)
    if unknown:
        raise UsageError(f"unknown parameter(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARAM_BOUNDS)}")
    init = initial_params(hw, names)
    lo = np.log([PARAM_BOUNDS[n][0] for n in names])
    hi = np.log([PARAM_BOUNDS[n][1] for n in names])

    def start(values: dict[str, float]) -> np.ndarray:
        return np.clip(np.log([max(values[n], PARAM_BOUNDS[n][0]) for n in names]), lo + 1e-9, hi - 1e-9)

    x0 = start(init)                    # the prior pulls towards the profile's values from either start
    log_meas = np.log([p.time_s for p in points])
    prior = math.sqrt(PRIOR_WEIGHT)

    def residuals(x: np.ndarray) -> np.ndarray:
        pred = predict_steps(apply_params(hw, dict(zip(names, np.exp(x)))), points)
        return np.concatenate([np.log(pred) - log_meas, prior * (x - x0)])

    starts = [x0]
    if any(n in ALTERNATIVE_START for n in names):
        starts.append(start({**init, **{k: v for k, v in ALTERNATIVE_START.items() if k in names}}))
    best = min((least_squares(residuals, x, bounds=(lo, hi), loss="soft_l1", f_scale=ROBUST_SCALE, diff_step=1e-3,
                              x_scale=1.0, ftol=1e-12, xtol=1e-12, gtol=1e-12, max_nfev=100 * len(names))
                for x in starts), key=lambda r: r.cost)
    return dict(zip(names, (float(v) for v in np.exp(best.x))))


# --------------------------------------------------------------------------- serving runs
def run_model(doc: dict) -> ModelSpec:
    if doc.get("model_spec"):
        return ModelSpec.model_validate(doc["model_spec"])
    from planner.catalog import load_model
    return load_model(doc["plan"]["model"])


def simulate_run(hw: HardwareProfile, doc: dict, step_scale: float = 1.0) -> dict:
    """The simulator's metrics for the load a bench run applied (its own arrivals), on the engine it reported
    (planner.simulator.simulate_engine_run); `step_scale` multiplies every step time (an interval's ends)."""
    from planner.arrivals import harness_requests
    from planner.simulator import simulate_engine_run

    cfg = doc.get("config") or {}
    load, wl = cfg.get("load") or {}, cfg.get("workload") or {}
    workload = Workload(input_tokens=LengthDist(**wl.get("input_tokens", {"mean": 1024})),
                        output_tokens=LengthDist(**wl.get("output_tokens", {"mean": 128})),
                        rate_rps=load.get("rate_rps"), concurrency=load.get("max_concurrency"),
                        arrival=load.get("arrival", "poisson"), burstiness=load.get("burstiness", 1.0))
    reqs = harness_requests(workload, int(load.get("num_requests") or 200), int(load.get("seed") or 0))
    return simulate_engine_run(run_model(doc), hw, Plan.model_validate(doc["plan"]), reqs,
                               doc.get("kv_cache") or {}, step_scale).metrics()


def run_errors(hw: HardwareProfile, doc: dict, metrics: dict[str, str] = RUN_METRICS) -> dict[str, dict]:
    """metric -> {predicted, measured, error} for one bench run (error = measured / predicted - 1)."""
    sim = simulate_run(hw, doc)
    out = {}
    for name, key in metrics.items():
        m, p = doc["metrics"].get(key), sim.get(key)
        if m is not None and p and math.isfinite(p):
            out[name] = {"predicted": p, "measured": m, "error": m / p - 1}
    return out


# --------------------------------------------------------------------------- the whole calibration
def step_rows(hw: HardwareProfile, points: list[StepPoint], split_name: str) -> list[dict]:
    pred = predict_steps(hw, points)
    return [{"split": split_name, "group": p.group, "model": p.deployment.model.name, "tp": p.deployment.tp,
             "weight_dtype": p.deployment.weight_dtype, "kind": p.kind, "prefill_tokens": p.batch.prefill_tokens,
             "decode_seqs": p.batch.decode_seqs, "decode_ctx_tokens": p.batch.decode_ctx_tokens,
             "measured_s": p.time_s, "predicted_s": float(t), "error": p.time_s / float(t) - 1}
            for p, t in zip(points, pred)]


def residuals_of(rows: list[dict], run_rows: list[dict]) -> dict[str, list[float]]:
    """Held-out relative errors by metric. TTFT/TPOT come from bench runs when there are any, else from
    held-out prefill / decode steps (a lone prefill is a TTFT at no load, a decode step is a TPOT)."""
    held = [r for r in rows if r["split"] == "test"]
    out = {"step": [r["error"] for r in held]}
    for kind in ("prefill", "decode", "mixed"):
        errs = [r["error"] for r in held if r["kind"] == kind]
        if errs:
            out[f"{kind}_step"] = errs
    for metric in RUN_METRICS:
        errs = [r[metric]["error"] for r in run_rows if metric in r]
        if errs:
            out[metric] = errs
    out.setdefault("ttft", out.get("prefill_step", []))
    out.setdefault("tpot", out.get("decode_step", []))
    return {k: [round(float(v), 5) for v in vs] for k, vs in out.items() if vs}


def calibrate(hw: HardwareProfile, traces: list[str | Path], runs: list[str | Path] = (),
              default: Deployment | None = None, names=DEFAULT_PARAMS, holdout: float = 0.3, seed: int = 0,
              command: str | None = None, exclude: bool = True, fit_traces: list[str | Path] = ()) -> Calibration:
    """`traces` are split into fitted and held-out points; `fit_traces` (a served run's steps, say) are only
    ever fitted."""
    if not traces:
        raise UsageError("give at least one step trace (--trace steps.jsonl)")
    if not 0 <= holdout < 1:
        raise UsageError(f"--holdout must be in [0, 1), got {holdout}")
    points = [p for t in traces for p in load_trace(t, default)]
    excluded = [(p, why) for p in points if (why := excluded_why(p))]
    points = [p for p in points if not excluded_why(p)] if exclude else points
    if not exclude:
        excluded = []
    docs = [(str(r), d) for r in runs for d in load_runs(r)]
    train, test = split(points, holdout, seed)
    train += [p for t in fit_traces for p in load_trace(t, default) if not (exclude and excluded_why(p))]
    params = fit(hw, train, tuple(names))
    out = apply_params(hw, params)
    rows = step_rows(out, train, "train") + step_rows(out, test, "test")
    run_rows = [{"run": r, **run_errors(out, d)} for r, d in docs]
    residuals = residuals_of(rows, run_rows)
    measured = dict(hw.measured or {})
    measured["residuals"] = residuals
    measured["calibration"] = {
        "params": params, "initial": initial_params(hw, names), "base_kind": hw.provenance.kind,
        "points": {"train": len(train), "test": len(test), "excluded": len(excluded)},
        "excluded": sorted({why for _, why in excluded}), "holdout": holdout, "seed": seed,
        "median_abs_error": {k: statistics.median(abs(v) for v in vs) for k, vs in residuals.items()},
        "runs": run_rows}
    prov = hw.provenance.model_copy(update={
        "kind": "calibrated", "date": dt.datetime.now().isoformat(timespec="seconds"), "command": command,
        "duration_s": None,
        "data_files": [str(p) for p in (*traces, *fit_traces, *runs)]})
    profile = out.model_copy(update={"measured": measured, "provenance": prov})
    return Calibration(profile, params, initial_params(hw, names), train, test, residuals, rows + run_rows,
                       excluded)
