"""Discrete-event simulation of serving replicas with continuous batching, on the cost model's step times.

One replica follows the scheduling policy of vLLM V1 (and the built-in engine), one engine step at a time:

1. running requests that are decoding each take one token; when the KV cache has no free block for a
   decode's next token, the newest running request is preempted (recompute: its blocks are freed and it goes
   back to the front of the waiting queue, to be prefilled again with the tokens it had generated);
2. the running request that is part-way through its prompt, then the waiting queue in order, take prefill
   chunks from what is left of the token budget (max_num_batched_tokens), while fewer than max_num_seqs
   run and the KV cache has blocks for the chunk (prefill is always chunked, as vLLM V1 and the built-in
   engine run it).
3. the step lasts costmodel.step_time_s for its composition; decodes emit a token at its end, and so does a
   prefill that completes its prompt (the first token, or the next one after a preemption).

With async scheduling (the built-in engine's --async-scheduling) a step's batch is chosen while the step before
it runs, so it admits only the requests that had arrived when that step started.

Decoding requests advance in lock-step, so the simulator keeps their aggregate (count, context sum, block
phase) instead of touching each request every step: per step it costs O(1) plus the requests that start,
finish or are preempted in it. Step times are memoised on the composition with its large sums rounded to 8
significant bits (< 0.4% apart), which keeps 10,000 requests well under a second.

Several replicas sit behind a router (round-robin, or least-outstanding-requests at each arrival).
Everything is deterministic: the only randomness is in the request stream (planner.arrivals, seeded).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Literal

import numpy as np

from planner.arrivals import Requests, synthetic
from planner.costmodel import Batch, Deployment, Hardware, prepare, step_time_s
from planner.memory import memory_breakdown
from planner.predict import deployment_of, engine_deployment
from planner.schemas import SLO, HardwareProfile, ModelSpec, Plan, Workload

Router = Literal["round-robin", "least-outstanding"]
ROUTERS = ("round-robin", "least-outstanding")
PERCENTILES = (50, 90, 95, 99)
DECODE_GRID_TOKENS = 256           # context per sequence between decode-time grid points
QUANT_BITS = 7                      # significant bits kept of the sums in a step-time memo key
# Queue growth (seconds of extra queueing per second of arrivals) above which a run counts as unstable:
# a stable queue's growth is ~0; an overloaded one grows at 1 - capacity/rate.
UNSTABLE_GROWTH = 0.02
KV_SERIES_POINTS = 200


# --------------------------------------------------------------------------- step times
def _q(x: float) -> int:
    """x rounded to QUANT_BITS significant bits (memo keys of large sums)."""
    x = int(x)
    s = x.bit_length() - QUANT_BITS
    return x if s <= 0 else ((x + (1 << (s - 1))) >> s) << s


class StepTimer:
    """costmodel.step_time_s memoised on a quantised composition, one per (hardware, deployment)."""

    def __init__(self, hw: Hardware, d: Deployment):
        self.hw, self.d = hw, d
        self.cache: dict[tuple, float] = {}
        self.grid: dict[tuple[int, int], float] = {}

    def __call__(self, pf_tokens: int, pf_seqs: int, pairs: float, kv: int, n_dec: int, ctx: int) -> float:
        """A step with prefill chunks. Only decode attention depends on the decodes' context sum, and it costs
        the same in a mixed step as in a decode-only one, so the memo key leaves the context out and adds
        the decode-only difference: t(mixed, ctx) = t(mixed, 0) + t(decode, ctx) - t(decode, 0)."""
        key = (_q(pf_tokens), pf_seqs, _q(pairs), _q(kv), n_dec)
        t = self.cache.get(key)
        if t is None:
            t = step_time_s(self.hw, self.d, Batch(key[0], pf_seqs, float(key[2]), key[3], n_dec, 0))
            self.cache[key] = t
        return t + self.decode(n_dec, ctx) - self.decode(n_dec, 0) if n_dec else t

    def decode(self, n_dec: int, ctx: int) -> float:
        """Decode-only steps (most of them): for a given batch the step time is piecewise linear in the context
        sum (only decode attention depends on it, a roofline max of two lines), so it is interpolated
        between grid points DECODE_GRID_TOKENS of context per sequence apart."""
        w = n_dec * DECODE_GRID_TOKENS
        j, r = divmod(ctx, w)
        grid = self.grid
        t0 = grid.get((n_dec, j))
        if t0 is None:
            t0 = grid[(n_dec, j)] = step_time_s(self.hw, self.d, Batch(0, 0, 0.0, 0, n_dec, j * w))
        if not r:
            return t0
        t1 = grid.get((n_dec, j + 1))
        if t1 is None:
            t1 = grid[(n_dec, j + 1)] = step_time_s(self.hw, self.d, Batch(0, 0, 0.0, 0, n_dec, (j + 1) * w))
        return t0 + (t1 - t0) * r / w


_TIMERS: dict[tuple, StepTimer] = {}


def step_timer(hw: Hardware, d: Deployment) -> StepTimer:
    """Shared between simulations of one deployment (scheduler settings do not change step times)."""
    m = d.model
    key = (id(hw), m.name, m.num_layers, m.hidden_size, d.tp, d.pp, d.weight_dtype, d.kv_dtype, d.cuda_graphs,
           d.graph_batch_sizes, d.piecewise_sizes, d.varlen_prefill, d.whole_graph_prefill, d.whole_graph_mixed,
           d.whole_graph_max_tokens, d.served,
           d.async_scheduling, d.fp8_rows_tuned, d.fp8_gemv_choices, d.folded_norm_rows)
    t = _TIMERS.get(key)
    if t is None or t.hw is not hw:
        t = _TIMERS[key] = StepTimer(hw, d)
    return t


# --------------------------------------------------------------------------- one replica
@dataclass(frozen=True)
class EngineConfig:
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_blocks: int
    block_size: int = 16

    @staticmethod
    def of(plan: Plan, kv_capacity_tokens: int) -> "EngineConfig":
        # vLLM requires max_num_batched_tokens >= max_num_seqs, so every running decode fits each step.
        return EngineConfig(min(plan.max_num_seqs, plan.max_num_batched_tokens), plan.max_num_batched_tokens,
                            kv_capacity_tokens // plan.block_size, plan.block_size)


class _Log:
    """Per-request outcomes, shared by the replicas of one run (indexed by request id)."""

    def __init__(self, reqs: Requests):
        n = len(reqs)
        self.arrival = reqs.arrival_s.tolist()
        self.inp = reqs.input_tokens.tolist()
        self.out = reqs.output_tokens.tolist()
        nan = [math.nan] * n
        self.first_sched, self.first_tok, self.last_tok, self.done = list(nan), list(nan), list(nan), list(nan)
        self.replica = [-1] * n
        self.gaps_after_preemption: list[float] = []   # ITL samples that span a preemption


class Replica:
    """One engine. `run_until(t)` executes every step that starts before t; `add(rid)` queues an arrival."""

    def __init__(self, index: int, timer: StepTimer, cfg: EngineConfig, log: _Log, step_scale: float = 1.0):
        self.index, self.timer, self.cfg, self.log = index, timer, cfg, log
        self.step_scale = step_scale          # multiplies every step time (prediction intervals)
        # Async scheduling: a step's batch is chosen when the step before it starts on the GPU, so it takes in
        # only the requests that had arrived by then (None: no step in flight).
        self.async_scheduling = timer.d.async_scheduling
        self.prev_start: float | None = None
        self.arrivals: list[int] = []          # request ids routed here, in arrival order
        self.next_arrival = 0
        self.now = 0.0
        self.step = 0
        self.waiting: deque[int] = deque()
        self.running: list[int] = []           # admission order; finished entries are skipped lazily
        self.n_running = 0
        self.partial: list[int] = []           # running requests part-way through their prompt
        self.target: dict[int, int] = {}       # prompt tokens to prefill (the prompt, plus output on resume)
        self.computed: dict[int, int] = {}     # prompt tokens prefilled so far
        self.generated: dict[int, int] = {}    # output tokens so far (prefilling requests)
        # Decoding requests: (first decode step, KV length then, tokens generated then, epoch)
        self.dec: dict[int, tuple[int, int, int]] = {}
        self.n_dec = 0
        self.ctx_offset = 0                    # decode context sum at step k = ctx_offset + n_dec * k
        self.phase = [0] * cfg.block_size      # decodes that need a new block at steps k = phase (mod bs)
        self.finish_at: dict[int, list[int]] = {}
        self.free = cfg.kv_blocks
        self.finished = 0
        self.preemptions = 0
        self.last_step_end = 0.0
        self.last_step_finished = 0
        # Per step: duration, decodes that emitted a token (ITL samples), blocks in use after it.
        self.step_dt: list[float] = []
        self.step_dec: list[int] = []
        self.step_used: list[int] = []
        self.step_end: list[float] = []

    def add(self, rid: int) -> None:
        self.arrivals.append(rid)
        self.log.replica[rid] = self.index

    def outstanding(self, t: float) -> int:
        """Requests routed here and not finished by time t."""
        late = self.last_step_finished if self.last_step_end > t else 0
        return len(self.arrivals) - self.finished + late

    # ------------------------------------------------------------------ preemption (rare path)
    def _preempt_newest(self, k: int) -> int:
        """Preempt the newest running request at step k, before this step's allocations; returns its id."""
        while True:
            rid = self.running.pop()
            if rid in self.dec or rid in self.partial:     # skip entries of finished requests
                break
        self._preempt(rid, k)
        return rid

    def _preempt_partial(self, rid: int, k: int) -> None:
        """Preempt a request part-way through its prompt whose next chunk finds no free block."""
        i = len(self.running) - 1                        # near the end: it is the newest running request
        while self.running[i] != rid:
            i -= 1
        del self.running[i]
        self._preempt(rid, k)

    def _preempt(self, rid: int, k: int) -> None:
        """Free a running request's blocks and queue it for recompute; the caller has taken it off `running`
        (the newest one may be a decode or a part-way prompt)."""
        bs = self.cfg.block_size
        if rid in self.dec:
            ks, kv0, g0 = self.dec.pop(rid)
            kv = kv0 + (k - ks)
            generated = g0 + (k - ks)
            self.n_dec -= 1
            self.ctx_offset -= kv0 - ks + 1
            self.phase[(ks - kv0) % bs] -= 1
        else:
            kv = self.computed[rid]
            generated = self.generated[rid]
            self.partial.remove(rid)
        self.free += -(-kv // bs)
        # Recompute: prefill the prompt and the tokens generated so far again.
        self.target[rid] = self.log.inp[rid] + generated
        self.computed[rid] = 0
        self.generated[rid] = generated
        self.waiting.appendleft(rid)
        self.n_running -= 1
        self.preemptions += 1

    # ------------------------------------------------------------------ the step loop
    def run_until(self, t_limit: float = math.inf) -> None:
        cfg, log, timer = self.cfg, self.log, self.timer
        bs, budget_max, max_seqs = cfg.block_size, cfg.max_num_batched_tokens, cfg.max_num_seqs
        arrivals, arrival_t = self.arrivals, log.arrival
        waiting, running, partial, phase, finish_at = self.waiting, self.running, self.partial, self.phase, \
            self.finish_at
        target, computed, generated, dec = self.target, self.computed, self.generated, self.dec
        out_len, first_sched, first_tok, last_tok, done = log.out, log.first_sched, log.first_tok, \
            log.last_tok, log.done
        step_dt, step_dec, step_used, step_end = self.step_dt, self.step_dec, self.step_used, self.step_end
        total_blocks = cfg.kv_blocks
        now, k = self.now, self.step
        while True:
            na = self.next_arrival
            cutoff = now if self.prev_start is None else self.prev_start
            while na < len(arrivals) and arrival_t[arrivals[na]] <= cutoff:
                rid = arrivals[na]
                target[rid], computed[rid], generated[rid] = log.inp[rid], 0, 0
                waiting.append(rid)
                na += 1
            self.next_arrival = na
            if self.n_running == 0 and not waiting:
                if na >= len(arrivals) or arrival_t[arrivals[na]] >= t_limit:
                    break
                now = max(now, arrival_t[arrivals[na]])
                self.prev_start = None              # idle: the next batch is chosen when it starts
                continue
            if now >= t_limit:
                break
            # 1. decodes: one token each, a new block when their KV crosses a block boundary
            need = phase[k % bs] if self.n_dec else 0
            while need > self.free:
                self._preempt_newest(k)
                need = phase[k % bs] if self.n_dec else 0
            self.free -= need
            n_dec = self.n_dec
            budget = budget_max - n_dec
            # 2. prefill chunks: the running part-way prompt first, then the waiting queue
            chunks: list[tuple[int, int, int]] = []   # (rid, chunk tokens, tokens before)
            for rid in list(partial):
                if budget <= 0:
                    break
                before = computed[rid]
                c = min(target[rid] - before, budget)
                new_blocks = -(-(before + c) // bs) - (-(-before // bs))
                if new_blocks > self.free:
                    # The part-way prompt is the newest running request (it was admitted last), so it is
                    # the one vLLM preempts.
                    self._preempt_partial(rid, k)
                    continue
                self.free -= new_blocks
                chunks.append((rid, c, before))
                budget -= c
            while waiting and budget > 0 and self.n_running < max_seqs:
                rid = waiting[0]
                rem = target[rid]
                c = min(rem, budget)
                blocks = -(-c // bs)
                if blocks > self.free:
                    break
                waiting.popleft()
                running.append(rid)
                self.n_running += 1
                self.free -= blocks
                if first_sched[rid] != first_sched[rid]:   # NaN: first time scheduled
                    first_sched[rid] = now
                chunks.append((rid, c, 0))
                budget -= c
                if c < rem:
                    partial.append(rid)
            # 3. the step
            if chunks:
                pf = sum(c for _, c, _ in chunks)
                pairs = sum(c * (b + (c + 1) / 2) for _, c, b in chunks)
                kvr = sum(c + b for _, c, b in chunks)
                dt = timer(pf, len(chunks), pairs, kvr, n_dec, self.ctx_offset + n_dec * k)
            elif n_dec:
                dt = timer.decode(n_dec, self.ctx_offset + n_dec * k)
            else:
                # Nothing fits (only possible with a pathological config): wait for the next arrival.
                if na >= len(arrivals):
                    break
                now = max(now, arrival_t[arrivals[na]])
                self.prev_start = None              # no step in flight
                continue
            dt *= self.step_scale
            if self.async_scheduling:
                self.prev_start = now
            now += dt
            step_dt.append(dt)
            step_dec.append(n_dec)
            step_end.append(now)
            finished_here = 0
            # decodes that emit their last token now
            for rid in finish_at.pop(k, ()):
                st = dec.get(rid)
                if st is None or st[0] + out_len[rid] - st[2] - 1 != k:
                    continue                            # preempted since, re-scheduled under a new entry
                ks, kv0, _ = dec.pop(rid)
                self.n_dec -= 1
                self.ctx_offset -= kv0 - ks + 1
                phase[(ks - kv0) % bs] -= 1
                self.free += -(-(kv0 + k - ks + 1) // bs)
                last_tok[rid] = done[rid] = now
                del target[rid], computed[rid], generated[rid]
                self.n_running -= 1
                finished_here += 1
            # prefill chunks; a completed prompt emits a token
            for rid, c, before in chunks:
                kv = before + c
                computed[rid] = kv
                if kv < target[rid]:
                    continue
                if rid in partial:
                    partial.remove(rid)
                g = generated[rid]
                if g == 0:
                    first_tok[rid] = now
                else:
                    log.gaps_after_preemption.append(now - last_tok[rid])
                g += 1
                last_tok[rid] = now
                if g >= out_len[rid]:
                    self.free += -(-kv // bs)
                    done[rid] = now
                    del target[rid], computed[rid], generated[rid]
                    self.n_running -= 1
                    finished_here += 1
                    continue
                generated[rid] = g
                ks = k + 1
                dec[rid] = (ks, kv, g)
                self.n_dec += 1
                self.ctx_offset += kv - ks + 1
                phase[(ks - kv) % bs] += 1
                finish_at.setdefault(ks + out_len[rid] - g - 1, []).append(rid)
            self.finished += finished_here
            self.last_step_end, self.last_step_finished = now, finished_here
            step_used.append(total_blocks - self.free)
            k += 1
        self.now, self.step = now, k


# --------------------------------------------------------------------------- statistics
def weighted_percentiles(values: np.ndarray, weights: np.ndarray, pcts: Iterable[float]) -> list[float]:
    """np.percentile (linear) of the sample in which values[i] appears weights[i] times, without
    materialising it: the pooled ITL sample has one entry per decode per step (millions)."""
    mask = weights > 0
    v, w = values[mask], weights[mask]
    if not len(v):
        return [math.nan for _ in pcts]
    order = np.argsort(v, kind="stable")
    v, cum = v[order], np.cumsum(w[order])
    n = int(cum[-1])
    out = []
    for p in pcts:
        h = (n - 1) * p / 100.0
        lo = math.floor(h)
        i_lo = int(np.searchsorted(cum, lo, side="right"))
        i_hi = int(np.searchsorted(cum, min(lo + 1, n - 1), side="right"))
        out.append(float(v[i_lo] + (h - lo) * (v[i_hi] - v[i_lo])))
    return out


@dataclass
class SimResult:
    """Per-request outcomes (NaN for requests that never completed) and run-level figures.
    Latency statistics cover the measured requests (after the warm-up) that completed."""
    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    replica: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray                      # (E2E - TTFT) / (output - 1); NaN for one-token outputs
    e2e_s: np.ndarray
    queue_s: np.ndarray                     # arrival -> first scheduled
    itl_s: np.ndarray                       # distinct gap values...
    itl_weight: np.ndarray                  # ...and how many samples each stands for
    measured: np.ndarray                    # bool: counts in the statistics (after warm-up, completed)
    duration_s: float
    preemptions: int
    failed: int                             # longer than the KV cache holds, or never finished
    steps: int
    kv_util_mean: float                     # time-weighted, all replicas
    kv_util_max: float
    kv_series: list[tuple[float, float]]    # (time s, utilisation) of replica 0, downsampled
    queue_growth: float                     # extra queueing seconds per second of arrivals
    slos: list[SLO] = field(default_factory=list)

    @property
    def stable(self) -> bool:
        """False when the queue grows without bound (the offered rate is at or above capacity)."""
        return self.queue_growth < UNSTABLE_GROWTH and self.failed == 0

    @property
    def completed(self) -> int:
        return int(self.measured.sum())

    def _tokens(self, which: np.ndarray) -> float:
        return float(which[self.measured].sum())

    @property
    def request_throughput_rps(self) -> float:
        return self.completed / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def output_throughput_tok_s(self) -> float:
        return self._tokens(self.output_tokens) / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def total_token_throughput_tok_s(self) -> float:
        tokens = self._tokens(self.output_tokens) + self._tokens(self.input_tokens)
        return tokens / self.duration_s if self.duration_s > 0 else 0.0

    def good(self) -> np.ndarray:
        """Measured requests that meet every TTFT, TPOT and E2E limit (vLLM's goodput definition; ITL
        SLOs are pooled statistics, not per-request, so they do not enter it)."""
        ok = self.measured.copy()
        for s in self.slos:
            series = {"ttft": self.ttft_s, "tpot": self.tpot_s, "e2e": self.e2e_s}.get(s.metric)
            if series is not None:
                ok &= ~(series > s.limit_s)             # NaN TPOT (one-token output) passes
        return ok

    @property
    def goodput_rps(self) -> float:
        return float(self.good().sum()) / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def good_fraction(self) -> float:
        n = self.completed + self.failed
        return float(self.good().sum()) / n if n else 0.0

    def samples(self, metric: str) -> np.ndarray:
        s = {"ttft": self.ttft_s, "tpot": self.tpot_s, "e2e": self.e2e_s, "queue": self.queue_s}[metric]
        s = s[self.measured]
        return s[~np.isnan(s)]

    def stat_s(self, metric: str, stat: str) -> float:
        """stat: mean, median, std or pNN, of ttft, tpot, itl, e2e (seconds)."""
        pct = 50.0 if stat == "median" else float(stat[1:]) if stat.startswith("p") else None
        if metric == "itl":
            v, w = self.itl_s, self.itl_weight
            if pct is not None:
                return weighted_percentiles(v, w, [pct])[0]
            if not w.sum():
                return math.nan
            mean = float(np.average(v, weights=w))
            return mean if stat == "mean" else float(np.sqrt(np.average((v - mean) ** 2, weights=w)))
        x = self.samples(metric)
        if not len(x):
            return math.nan
        if pct is not None:
            return float(np.percentile(x, pct))
        return float(x.mean() if stat == "mean" else x.std())

    def percentiles_s(self) -> dict[str, float]:
        """Keys for Prediction.percentiles: ttft_p90_s, tpot_p50_s, itl_p99_s, e2e_p95_s..."""
        out = {}
        for m in ("ttft", "tpot", "itl", "e2e"):
            for p in PERCENTILES:
                out[f"{m}_p{p}_s"] = self.stat_s(m, f"p{p}")
        return out

    def metrics(self) -> dict:
        """The figures of a `vllm bench serve` run (shared/reference/metrics.md), plus the simulator's own."""
        doc = {"completed": self.completed, "failed": self.failed, "duration_s": self.duration_s,
               "request_throughput": self.request_throughput_rps,
               "output_throughput": self.output_throughput_tok_s,
               "total_token_throughput": self.total_token_throughput_tok_s}
        if self.slos:
            doc["goodput"] = self.goodput_rps
            doc["good_fraction"] = self.good_fraction
        for m, key in (("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl"), ("e2e", "e2el")):
            for stat in ("mean", "median", "std", *(f"p{p}" for p in PERCENTILES)):
                doc[f"{stat}_{key}_ms"] = self.stat_s(m, stat) * 1e3
        doc["mean_queue_ms"] = float(self.samples("queue").mean() * 1e3) if self.completed else math.nan
        doc["concurrency_littles_law"] = float(self.e2e_s[self.measured].sum() / self.duration_s) \
            if self.duration_s > 0 else 0.0
        doc.update(preemptions=self.preemptions, steps=self.steps, kv_util_mean=self.kv_util_mean,
                   kv_util_max=self.kv_util_max, queue_growth=self.queue_growth, stable=self.stable)
        return doc


def _queue_growth(arrival: np.ndarray, queue: np.ndarray) -> float:
    """Slope of queueing time against arrival time, between the second and the last fifth of requests."""
    ok = ~np.isnan(queue)
    a, q = arrival[ok], queue[ok]
    n = len(a)
    if n < 10:
        return 0.0
    f = n // 5
    early, late = slice(f, 2 * f), slice(n - f, n)
    span = float(a[late].mean() - a[early].mean())
    return float(q[late].mean() - q[early].mean()) / span if span > 0 else 0.0


def _downsample(t: list[float], y: list[float], points: int) -> list[tuple[float, float]]:
    if not t:
        return []
    idx = np.unique(np.linspace(0, len(t) - 1, min(points, len(t))).astype(int))
    return [(float(t[i]), float(y[i])) for i in idx]


# --------------------------------------------------------------------------- runs
def kv_capacity_tokens(model: ModelSpec, hw: Hardware, plan: Plan, mean_context: float) -> int:
    d = deployment_of(model, plan)
    mem = memory_breakdown(hw.profile, d, plan.max_num_batched_tokens, plan.max_num_seqs,
                           plan.gpu_memory_utilization, mean_context, plan.block_size)
    if not mem.fits:
        raise ValueError(f"{plan.model} does not fit on {plan.gpus_per_replica}x {plan.hardware} "
                         f"(needs {mem.shortfall_bytes / 1e9:.1f} GB more per GPU)")
    return mem.kv_capacity_tokens


def simulate(model: ModelSpec, hw: HardwareProfile | Hardware, plan: Plan, requests: Requests,
             router: Router = "round-robin", slos: Iterable[SLO] = (), warmup_fraction: float = 0.0,
             kv_tokens: int | None = None, deployment: Deployment | None = None, step_scale: float = 1.0) -> SimResult:
    """Serve `requests` with `plan.replicas` replicas behind `router`. `kv_tokens` overrides the KV capacity
    per replica (memory model's by default); `deployment` the engine features the plan implies; `step_scale`
    multiplies every step time (an engine that far from the cost model)."""
    if router not in ROUTERS:
        raise ValueError(f"unknown router {router!r}: use {' or '.join(ROUTERS)}")
    h = prepare(hw)
    mean_ctx = float(requests.input_tokens.mean() + requests.output_tokens.mean())
    kv = kv_tokens if kv_tokens is not None else kv_capacity_tokens(model, h, plan, mean_ctx)
    cfg = EngineConfig.of(plan, kv)
    timer = step_timer(h, deployment or deployment_of(model, plan))
    log = _Log(requests)
    reps = [Replica(i, timer, cfg, log, step_scale) for i in range(plan.replicas)]
    # A request longer than the whole KV cache could never run: vLLM refuses it up front.
    fits = (requests.input_tokens + requests.output_tokens) <= cfg.kv_blocks * cfg.block_size
    ids = np.flatnonzero(fits).tolist()
    if router == "round-robin" or len(reps) == 1:
        for j, rid in enumerate(ids):
            reps[j % len(reps)].add(rid)
        for r in reps:
            r.run_until()
    else:
        arrival = log.arrival
        for rid in ids:
            t = arrival[rid]
            for r in reps:
                r.run_until(t)
            min(reps, key=lambda r: r.outstanding(t)).add(rid)
        for r in reps:
            r.run_until()
    return _result(requests, log, reps, slos, warmup_fraction)


def _result(requests: Requests, log: _Log, reps: list[Replica], slos: Iterable[SLO],
            warmup_fraction: float) -> SimResult:
    arrival = requests.arrival_s
    out = requests.output_tokens
    first_tok, done = np.array(log.first_tok), np.array(log.done)
    ttft, e2e = first_tok - arrival, done - arrival
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (done - first_tok) / (out - 1), np.nan)
    queue = np.array(log.first_sched) - arrival
    completed = ~np.isnan(done)
    measured = completed.copy()
    measured[: int(len(arrival) * warmup_fraction)] = False
    t_warm = float(arrival[measured].min()) if measured.any() else 0.0
    # ITL samples: each step's duration once per decode in it, plus the gaps that span a preemption.
    dts = np.concatenate([np.array(r.step_dt) for r in reps] + [np.array(log.gaps_after_preemption)])
    ends = np.concatenate([np.array(r.step_end) for r in reps] + [np.full(len(log.gaps_after_preemption),
                                                                          np.inf)])
    wts = np.concatenate([np.array(r.step_dec, dtype=np.int64) for r in reps]
                         + [np.ones(len(log.gaps_after_preemption), dtype=np.int64)])
    keep = ends >= t_warm
    total_blocks = reps[0].cfg.kv_blocks
    util_num = sum(float(np.dot(r.step_dt, r.step_used)) for r in reps)
    busy = sum(float(np.sum(r.step_dt)) for r in reps)
    end = float(np.nanmax(done[measured])) if measured.any() else t_warm
    r0 = reps[0]
    return SimResult(
        arrival_s=arrival, input_tokens=requests.input_tokens, output_tokens=out,
        replica=np.array(log.replica), ttft_s=ttft, tpot_s=tpot, e2e_s=e2e, queue_s=queue,
        itl_s=dts[keep], itl_weight=wts[keep], measured=measured, duration_s=end - t_warm,
        preemptions=sum(r.preemptions for r in reps), failed=int((~completed).sum()),
        steps=sum(len(r.step_dt) for r in reps),
        kv_util_mean=util_num / busy / total_blocks if busy and total_blocks else 0.0,
        kv_util_max=max((max(r.step_used, default=0) for r in reps), default=0) / max(total_blocks, 1),
        kv_series=_downsample(r0.step_end, [u / max(total_blocks, 1) for u in r0.step_used], KV_SERIES_POINTS),
        queue_growth=_queue_growth(arrival, queue), slos=list(slos))


def simulate_engine_run(model: ModelSpec, hw: HardwareProfile | Hardware, plan: Plan, reqs: Requests,
                        engine: dict | None = None, step_scale: float = 1.0) -> SimResult:
    """Requests as a `plan bench run` sent them, served by the plan as the engine reported running it
    (`engine`: the built-in engine's kv_cache event, its KV capacity replacing the memory model's so timing
    is checked apart from memory; None: a server that reports nothing, run as the plan implies)."""
    if engine is None:
        return simulate(model, hw, plan, reqs, step_scale=step_scale)
    return simulate(model, hw, plan, reqs, kv_tokens=engine.get("kv_capacity_tokens"),
                    deployment=engine_deployment(model, plan, engine), step_scale=step_scale)


def simulate_workload(model: ModelSpec, hw: HardwareProfile | Hardware, plan: Plan, workload: Workload,
                      n_requests: int = 1000, seed: int = 0, router: Router = "round-robin",
                      slos: Iterable[SLO] = (), warmup_fraction: float = 0.0, step_scale: float = 1.0) -> SimResult:
    """Simulate n requests drawn from a workload (its rate, arrival process and length distributions)."""
    return simulate(model, hw, plan, synthetic(workload, n_requests, seed), router, slos, warmup_fraction,
                    step_scale=step_scale)
