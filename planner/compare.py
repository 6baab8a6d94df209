"""`plan compare`: the best plan on each GPU type side by side, for one model, rate and set of SLOs.

Each GPU type gets its own search (analytic screen, then simulated finalists when a rate is given), so a
type that loses overall still shows its best plan. A type on which nothing meets the SLOs gets a row with
the binding constraint instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

from planner import api, catalog
from planner.schemas import SLO, HardwareProfile
from planner.search import Candidate, metric_value, why_none_scored

COMPARE_TRIALS = 120               # per GPU type: its space is a tenth of the whole catalog's
COMPARE_FINALISTS = 4              # simulated per GPU type: only its best plan is shown


@dataclass
class Row:
    gpu: str
    candidate: Candidate | None
    gpus: int = 0
    nodes: int = 0
    cost_per_hour: float = math.nan
    cost_per_million_tokens: float = math.nan
    tokens_per_s_per_gpu: float = math.nan
    power_kw: float = math.nan
    headroom: dict[str, float] = field(default_factory=dict)   # SLO label -> limit / predicted - 1
    reason: str | None = None               # why no plan, when there is none
    profile: str = "datasheet"

    @property
    def ok(self) -> bool:
        return self.candidate is not None and self.candidate.meets_slo


@dataclass
class Comparison:
    model: str
    slos: list[SLO]
    rate_rps: float | None
    input_tokens: float
    output_tokens: float
    rows: list[Row]


def headroom(c: Candidate, slos: Iterable[SLO]) -> dict[str, float]:
    """limit / predicted - 1 per SLO: 0.25 means 25% to spare, negative means missed."""
    return {s.label: s.limit_s / metric_value(c.prediction, s) - 1 for s in slos}


def _why(r: api.Recommendation) -> str:
    if not r.result.closest:
        return why_none_scored(r.result, r.workload.rate_rps)
    c = r.result.closest[0]
    b = c.binding
    return f"binding: {b} ({c.violations[b]:.2f}x the limit) with {c.plan.num_gpus} GPUs"


def row_for(hw: HardwareProfile, r: api.Recommendation) -> Row:
    best = r.best
    if best is None:
        return Row(gpu=hw.name, candidate=None, reason=_why(r), profile=hw.provenance.kind)
    p, pred = best.plan, best.prediction
    tdp_w = hw.tdp_w
    return Row(gpu=p.hardware, candidate=best, gpus=p.num_gpus,
               nodes=math.ceil(p.num_gpus / hw.interconnect.gpus_per_node),
               cost_per_hour=pred.cost_per_hour, cost_per_million_tokens=pred.cost_per_million_tokens,
               tokens_per_s_per_gpu=pred.tokens_per_s_per_gpu, power_kw=p.num_gpus * tdp_w / 1e3,
               headroom=headroom(best, r.slos), profile=pred.profile_kind)


def compare(model: str, gpus: Iterable[str], slos: Iterable[str | SLO] = (), rate_rps: float | None = None,
            input_tokens: float = api.DEFAULT_INPUT_TOKENS, output_tokens: float = api.DEFAULT_OUTPUT_TOKENS,
            max_gpus: int = 64, objective: str = "cost", trials: int = COMPARE_TRIALS, seed: int = 0,
            profile: str = "auto", prices: str | None = None) -> Comparison:
    """The best plan per GPU type; rows that meet the SLOs first, cheapest per token first."""
    # The profiles the searches use (a --profile file included): their names, TDPs and node sizes fill the rows.
    hws = {h.name: h for h in (catalog.load_hardware(g, profile) for g in gpus)}    # keeps order, drops repeats
    slo_list = api._slos(slos)
    rows = []
    for name, hw in hws.items():
        r = api.recommend(model, slo_list, [name], input_tokens, output_tokens, rate_rps, max_gpus, objective,
                          top=1, trials=trials, seed=seed, profile=profile, prices=prices,
                          finalists=COMPARE_FINALISTS)
        rows.append(row_for(hw, r))
    rows.sort(key=lambda w: (not w.ok, w.cost_per_million_tokens if w.ok else 0.0))
    spec = catalog.load_model(model)
    return Comparison(spec.name, slo_list, rate_rps, input_tokens, output_tokens, rows)
