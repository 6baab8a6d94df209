"""Deployment search: Optuna over GPU type, parallelism, quantization and scheduler settings.

Each trial builds a plan, rejects it cheaply when it cannot run (heads not divisible by TP, weights and
one sequence's KV not fitting, more GPUs than allowed), and otherwise scores it with the analytic cost
model. Plans that meet every SLO rank by the objective; when none does, the closest ones are reported
with the constraint that binds.
"""
from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal

from planner.costmodel import Hardware, prepare
from planner.predict import predict
from planner.schemas import SLO, HardwareProfile, ModelSpec, Plan, Prediction, Workload

Objective = Literal["cost", "throughput", "latency", "goodput"]

TP_CHOICES = (1, 2, 4, 8)
PP_CHOICES = (1, 2, 4)
WEIGHT_DTYPES = ("bf16", "fp8", "int8", "int4")
KV_DTYPES = ("bf16", "fp8")
MAX_NUM_SEQS = (16, 32, 64, 128, 256, 512, 1024)
MAX_BATCHED_TOKENS = (2048, 4096, 8192, 16384)
DEFAULT_TRIALS = 300
INFEASIBLE = (1e6, 1e6)           # rank key of a plan that cannot run at all
POLISH_STARTS = 12
NSGA_POPULATION = 40
SCHEDULER_GRID_STARTS = 4


@dataclass(frozen=True)
class Space:
    hardware: tuple[HardwareProfile, ...]
    tp: tuple[int, ...] = TP_CHOICES
    pp: tuple[int, ...] = PP_CHOICES
    weight_dtypes: tuple[str, ...] = WEIGHT_DTYPES
    kv_dtypes: tuple[str, ...] = KV_DTYPES
    max_num_seqs: tuple[int, ...] = MAX_NUM_SEQS
    max_num_batched_tokens: tuple[int, ...] = MAX_BATCHED_TOKENS
    max_gpus: int = 64
    gpu_memory_utilization: float = 0.90

    def size(self) -> int:
        return (len(self.hardware) * len(self.tp) * len(self.pp) * len(self.weight_dtypes) * len(self.kv_dtypes)
                * len(self.max_num_seqs) * len(self.max_num_batched_tokens))


@dataclass
class Candidate:
    plan: Plan
    prediction: Prediction
    violations: dict[str, float]             # SLO label -> predicted / limit (> 1 when missed)
    objective_value: float

    @property
    def violation(self) -> float:
        """How far outside the SLOs, in log units (0 when all are met)."""
        return sum(math.log(r) for r in self.violations.values())

    @property
    def rank_key(self) -> tuple[float, float]:
        """Plans meeting the SLOs beat every plan that misses; then the objective decides."""
        return (self.violation, math.log(max(self.objective_value, 1e-12)))

    @property
    def meets_slo(self) -> bool:
        return not self.violations

    @property
    def binding(self) -> str | None:
        return max(self.violations, key=self.violations.get) if self.violations else None


@dataclass
class SearchResult:
    ranked: list[Candidate]                  # meeting every SLO, best first
    closest: list[Candidate]                 # best-scored among the rest, when nothing meets the SLOs
    trials: int
    evaluated: int
    rejected: dict[str, int] = field(default_factory=dict)        # why, before scoring: kind -> configurations
    fastest: dict[str, Candidate] = field(default_factory=dict)   # metric -> the candidate that minimised it
    pool: list[Candidate] = field(default_factory=list)            # every scored plan (Pareto fronts)
    max_gpus: int = 64
    # The fewest GPUs a configuration that fits in memory needed to carry the rate, when that was over max_gpus.
    gpus_needed: int | None = None


def structural_reason(model: ModelSpec, hw: HardwareProfile, tp: int, pp: int, weight_dtype: str) -> str | None:
    """Why a (GPU, TP, PP, dtype) can never run, or None. Cheap: no cost model involved."""
    if model.num_attention_heads % tp:
        return f"TP {tp} does not divide {model.num_attention_heads} attention heads"
    if tp > model.num_kv_heads and tp % model.num_kv_heads:
        return f"TP {tp} is not a multiple of {model.num_kv_heads} KV heads"
    if tp > hw.interconnect.gpus_per_node:
        return f"TP {tp} exceeds the {hw.interconnect.gpus_per_node} GPUs of one {hw.name} node"
    if pp > model.num_layers:
        return f"PP {pp} exceeds {model.num_layers} layers"
    if weight_dtype == "fp8" and "fp8" not in hw.peak_flops and hw.vendor != "nvidia":
        return f"{hw.name} has no fp8 support"
    return None


def metric_value(pred: Prediction, slo: SLO) -> float:
    """The predicted value an SLO is checked against: simulated percentile when present, else the mean."""
    if slo.percentile and pred.percentiles:
        key = f"{slo.metric}_p{slo.percentile:g}_s"
        if key in pred.percentiles:
            return pred.percentiles[key]
    return {"ttft": pred.ttft_s, "tpot": pred.tpot_s, "itl": pred.tpot_s, "e2e": pred.e2e_s}[slo.metric]


def violations(pred: Prediction, slos: Iterable[SLO]) -> dict[str, float]:
    out = {}
    for s in slos:
        ratio = metric_value(pred, s) / s.limit_s
        if ratio > 1.0:
            out[s.label] = ratio
    return out


def objective_value(pred: Prediction, objective: Objective) -> float:
    """Lower is better."""
    if objective == "cost":
        return pred.cost_per_million_tokens
    if objective == "throughput":
        return 1.0 / max(pred.tokens_per_s_per_gpu, 1e-9)
    if objective == "goodput":
        # $ per million output tokens of requests that meet their SLOs (simulated); the analytic screen
        # has no per-request outcomes, so there it is the plain cost.
        good = pred.simulation.get("good_fraction", 1.0) if pred.simulation else 1.0
        return pred.cost_per_million_tokens / max(good, 1e-9)
    return pred.e2e_s


class Evaluator:
    """Plans -> candidates, with a cache: trials often revisit a configuration."""

    def __init__(self, model: ModelSpec, workload: Workload, slos: list[SLO], objective: Objective,
                 space: Space):
        self.model, self.workload, self.slos, self.objective, self.space = model, workload, slos, objective, space
        self.hw: dict[str, Hardware] = {h.name: prepare(h) for h in space.hardware}
        self.cache: dict[tuple, Candidate | str] = {}
        self.rejected: dict[str, int] = {}
        self.gpus_needed: int | None = None

    def _reject(self, key: tuple, kind: str, reason: str) -> str:
        self.cache[key] = reason
        self.rejected[kind] = self.rejected.get(kind, 0) + 1
        return reason

    def evaluate(self, gpu: str, tp: int, pp: int, weight_dtype: str, kv_dtype: str, max_num_seqs: int,
                 max_num_batched_tokens: int) -> Candidate | str:
        key = (gpu, tp, pp, weight_dtype, kv_dtype, max_num_seqs, max_num_batched_tokens)
        if key in self.cache:
            return self.cache[key]
        hw = self.hw[gpu]
        reason = structural_reason(self.model, hw.profile, tp, pp, weight_dtype)
        if reason:
            return self._reject(key, reason.split(" ")[0] if reason[:2] in ("TP", "PP") else "dtype", reason)
        if tp * pp > self.space.max_gpus:
            return self._reject(key, "GPUs", f"GPUs {tp * pp} exceed --max-gpus {self.space.max_gpus}")
        base = dict(model=self.model.ref, hardware=gpu, tp=tp, pp=pp, weight_dtype=weight_dtype,
                    kv_dtype=kv_dtype, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                    gpu_memory_utilization=self.space.gpu_memory_utilization)
        one = Plan(num_gpus=tp * pp, **base)
        no_rate = self.workload.model_copy(update={"rate_rps": None})
        pred = predict(self.model, hw, one, no_rate)
        if not pred.memory.fits:
            return self._reject(key, "memory", f"needs {pred.memory.shortfall_bytes / 1e9:.1f} GB more per GPU")
        replicas = 1
        if self.workload.rate_rps:
            # Replicas to carry the rate, keeping each below 90% of its capacity so queues stay short.
            replicas = max(1, math.ceil(self.workload.rate_rps / (0.9 * pred.requests_per_s)))
            if replicas * tp * pp > self.space.max_gpus:
                self.gpus_needed = min(self.gpus_needed or math.inf, replicas * tp * pp)
                return self._reject(key, "GPUs", f"GPUs {replicas * tp * pp} exceed --max-gpus {self.space.max_gpus}")
        # vLLM refuses to start when one sequence of max_model_len would not fit the KV cache.
        max_len = min(self.model.max_position_embeddings, pred.memory.kv_capacity_tokens)
        plan = Plan(num_gpus=replicas * tp * pp, replicas=replicas, max_model_len=max_len, **base)
        if replicas > 1 or self.workload.rate_rps:
            pred = predict(self.model, hw, plan, self.workload)
        viol = violations(pred, self.slos)
        obj = objective_value(pred, self.objective)
        cand = Candidate(plan, pred, viol, obj)
        self.cache[key] = cand
        return cand


def _suggest(trial, ev: Evaluator) -> Candidate | str:
    s = ev.space
    gpu = trial.suggest_categorical("gpu", [h.name for h in s.hardware])
    return ev.evaluate(
        gpu,
        trial.suggest_categorical("tp", list(s.tp)),
        trial.suggest_categorical("pp", list(s.pp)),
        trial.suggest_categorical("weight_dtype", list(s.weight_dtypes)),
        trial.suggest_categorical("kv_dtype", list(s.kv_dtypes)),
        trial.suggest_categorical("max_num_seqs", list(s.max_num_seqs)),
        trial.suggest_categorical("max_num_batched_tokens", list(s.max_num_batched_tokens)),
    )


def study_name(model: ModelSpec, workload: Workload, slos: list[SLO], objective: str, space: Space) -> str:
    """Workers sharing a storage share a study only when they search the same question."""
    key = repr((model.name, workload.model_dump(), [s.label for s in slos], objective,
                [h.name for h in space.hardware], space.max_gpus))
    return f"plan-{model.name}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def search(model: ModelSpec, workload: Workload, slos: list[SLO], space: Space, objective: Objective = "cost",
           trials: int = DEFAULT_TRIALS, seed: int = 0, storage: str | None = None, top: int = 5,
           progress: Callable[[int, int], None] | None = None) -> SearchResult:
    import optuna  # imported here: ~0.3 s, only the search needs it

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ev = Evaluator(model, workload, slos, objective, space)
    sampler = make_sampler(optuna, seed)
    study = optuna.create_study(direction="minimize", sampler=sampler, storage=storage,
                                study_name=study_name(model, workload, slos, objective, space) if storage else None,
                                load_if_exists=bool(storage))
    for i in range(trials):
        trial = study.ask()
        cand = _suggest(trial, ev)
        violation, value = INFEASIBLE if isinstance(cand, str) else cand.rank_key
        trial.set_constraint("slo_violation", violation)
        study.tell(trial, value)
        if progress:
            progress(i + 1, trials)
    polish(ev)
    return summarize(ev, trials, top)


def make_sampler(optuna, seed: int):
    """NSGA-II, with the SLO violation set as each trial's constraint: cheap per trial (TPE costs ~10 ms a
    trial at this size, more than scoring the plan) and it keeps plans that meet the SLOs ahead."""
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=NSGA_POPULATION)


def plan_key(p: Plan) -> tuple:
    """A plan's point in the search space, in the order of `_dims` and `Evaluator.evaluate`."""
    return p.hardware, p.tp, p.pp, p.weight_dtype, p.kv_dtype, p.max_num_seqs, p.max_num_batched_tokens


def _dims(space: Space) -> list[tuple]:
    return [tuple(h.name for h in space.hardware), space.tp, space.pp, space.weight_dtypes, space.kv_dtypes,
            space.max_num_seqs, space.max_num_batched_tokens]


def polish(ev: Evaluator, starts: int = POLISH_STARTS) -> None:
    """Coordinate descent from the best distinct plans the sampler found: change one setting at a time while
    the score improves. The sampler finds the right region; this settles the last few percent cheaply."""
    def score(key):
        c = ev.evaluate(*key)
        return c.rank_key if isinstance(c, Candidate) else INFEASIBLE

    scored = sorted((c for c in ev.cache.values() if isinstance(c, Candidate)), key=lambda c: c.rank_key)
    dims = _dims(ev.space)
    # One start per (GPU, TP) so a better region reached only by changing both at once is not missed.
    seen, firsts = set(), []
    for c in scored:
        if (c.plan.hardware, c.plan.tp) not in seen:
            seen.add((c.plan.hardware, c.plan.tp))
            firsts.append(c)
    for c in firsts[:starts]:
        key = plan_key(c.plan)
        best = score(key)
        visited = {key}
        moved = True
        while moved:
            moved = False
            for i, choices in enumerate(dims):
                for v in choices:
                    trial_key = key[:i] + (v,) + key[i + 1:]
                    s = score(trial_key)
                    # Equal scores move too (once per point): a setting that does not matter alone
                    # can open the way for another that does.
                    if s < best or (s == best and trial_key not in visited):
                        key, best, moved = trial_key, s, True
                        visited.add(key)
    # Scheduler settings interact (batch size, token budget): settle them jointly for the
    # best few deployments.
    scored = sorted((c for c in ev.cache.values() if isinstance(c, Candidate)), key=lambda c: c.rank_key)
    sched = list(itertools.product(*dims[5:]))
    for c in _dedupe(scored)[:SCHEDULER_GRID_STARTS]:
        for combo in sched:
            ev.evaluate(*plan_key(c.plan)[:5], *combo)


def summarize(ev: Evaluator, trials: int, top: int) -> SearchResult:
    cands = [c for c in ev.cache.values() if isinstance(c, Candidate)]
    ok = sorted((c for c in cands if c.meets_slo), key=lambda c: (c.objective_value, c.plan.num_gpus))
    rest = sorted((c for c in cands if not c.meets_slo), key=lambda c: c.rank_key)
    fastest = {}
    for metric in ("ttft_s", "tpot_s"):
        if cands:
            fastest[metric] = min(cands, key=lambda c: getattr(c.prediction, metric))
    return SearchResult(_dedupe(ok)[:top], [] if ok else _dedupe(rest)[:top], trials, len(cands),
                        dict(ev.rejected), fastest, cands, ev.space.max_gpus, ev.gpus_needed)


def why_none_scored(result: SearchResult, rate_rps: float | None) -> str:
    """What eliminated every configuration searched before any was scored (result.rejected), and what to change."""
    if result.gpus_needed:
        return (f"every configuration searched that fits in memory needs at least {result.gpus_needed} GPUs to carry "
                f"{rate_rps:g} req/s, more than --max-gpus {result.max_gpus}: allow more GPUs (--max-gpus "
                f"{result.gpus_needed}), faster GPUs (--gpus) or a lower --rate")
    if result.rejected.get("GPUs"):
        return (f"no configuration fits the model in memory on at most --max-gpus {result.max_gpus} GPUs: allow more "
                "GPUs (--max-gpus) or larger GPUs (--gpus)")
    if result.rejected.get("memory"):
        return "no configuration fits the model in memory on these GPUs: allow larger GPUs (--gpus)"
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(result.rejected.items()))
    return f"no configuration searched can run the model on these GPUs (rejected: {kinds}): try other GPUs (--gpus)"


def _dedupe(cands: list[Candidate]) -> list[Candidate]:
    """Keep one plan per (GPU, TP, PP, dtypes): scheduler variants of the same deployment crowd the table."""
    seen, out = set(), []
    for c in cands:
        p = c.plan
        k = (p.hardware, p.tp, p.pp, p.weight_dtype, p.kv_dtype)
        if k not in seen:
            seen.add(k)
            out.append(c)
    return out


def exhaustive(model: ModelSpec, workload: Workload, slos: list[SLO], space: Space,
               objective: Objective = "cost") -> SearchResult:
    """Every point of the space (for small spaces and for checking the search)."""
    ev = Evaluator(model, workload, slos, objective, space)
    grid = itertools.product([h.name for h in space.hardware], space.tp, space.pp, space.weight_dtypes,
                             space.kv_dtypes, space.max_num_seqs, space.max_num_batched_tokens)
    n = 0
    for args in grid:
        ev.evaluate(*args)
        n += 1
    return summarize(ev, n, 5)
