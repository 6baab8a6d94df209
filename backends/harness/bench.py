"""`plan bench`: execute a plan on a backend, load it, and record what was measured.

A BenchSession starts the server once; each `measure` is one load point (a run, a sweep step or a
search probe) and returns the run document that goes to JSON and to the results database.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import math
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from backends.harness.client_check import ClientThresholds, client_report
from backends.harness.http_client import HttpClient
from backends.harness.metrics import compute_metrics
from backends.harness.payloads import body_maker
from backends.harness.prediction import predict, predicted_vs_measured
from backends.harness.prompts import RequestSpec, read_sharegpt, shuffled_cycle, synthetic_requests
from backends.harness.provenance import git_revision, gpu_name, versions
from backends.harness.runner import LoadConfig, LoadResult, StopSignal, run_load
from backends.harness.servers import RunningServer, ServerOptions, start_server
from backends.harness.slos import goodput_limits_ms
from backends.harness.tokenizer import Tokenizer
from planner.errors import PlanError
from planner.schemas import SLO, LengthDist, Plan, Workload

SCHEMA = "plan-bench/1"
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
# Random prompt ids stay below this (as every run drew them before the server was asked) ...
MAX_PROMPT_ID = 1000
# ... and below this when neither the server nor this machine knows the model's vocabulary: byte-level
# vocabularies start with 256 byte tokens, so it is inside any model's (the tiny test model has 512).
ANY_VOCAB = 256


@dataclass
class WorkloadOptions:
    input_tokens: LengthDist = field(default_factory=lambda: LengthDist(mean=128))
    output_tokens: LengthDist = field(default_factory=lambda: LengthDist(mean=32))
    prompt_kind: str = "ids"                 # ids | text
    vocab_size: int | None = None           # ids are drawn below this; None: see prompt_vocab
    sharegpt: Path | None = None
    tokenizer: Path | None = None
    chat: bool = False
    temperature: float = 0.0


@dataclass
class BenchOptions:
    backend: str = "url"
    server: ServerOptions = field(default_factory=ServerOptions)
    workload: WorkloadOptions = field(default_factory=WorkloadOptions)
    slos: list[SLO] = field(default_factory=list)       # goodput limits
    thresholds: ClientThresholds = field(default_factory=ClientThresholds)
    tag: str | None = None
    command: str | None = None


def _event_loop_runner():
    try:
        import uvloop  # optional; a faster loop leaves more headroom before the client is the bottleneck
        return uvloop.run
    except ImportError:
        return asyncio.run


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


class BenchSession:
    def __init__(self, plan: Plan | None, plan_path: Path | None, opts: BenchOptions):
        self.plan, self.plan_path, self.opts = plan, plan_path, opts
        self.server: RunningServer | None = None
        self._sigterm = None
        w = opts.workload
        # Files are read here, before any server starts: a bad one is a usage error, not an empty run.
        self.tokenizer = Tokenizer(w.tokenizer) if w.tokenizer else None
        fixed_out = int(w.output_tokens.mean) if w.output_tokens.kind == "fixed" else None
        self.sharegpt = read_sharegpt(w.sharegpt, tokenizer=self.tokenizer, output_len=fixed_out) \
            if w.sharegpt else None
        self.vocab_size = w.vocab_size

    def __enter__(self) -> BenchSession:
        # SIGTERM (a CI job's timeout, `kill`) unwinds like Ctrl-C, so the server this session started (in its own
        # process group) is stopped by __exit__ instead of outliving the client.
        self._sigterm = signal.signal(signal.SIGTERM, _terminate) \
            if threading.current_thread() is threading.main_thread() else None
        try:
            self.server = start_server(self.opts.backend, self.plan, self.plan_path, self.opts.server)
        except BaseException:
            self._restore_sigterm()
            raise
        if self.vocab_size is None:
            self.vocab_size = prompt_vocab(self.server.vocab_size,
                                           self.opts.server.model or (self.plan.model if self.plan else None),
                                           self.server.served_model)
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.server is not None:
                self.server.stop()
        finally:
            self._restore_sigterm()

    def _restore_sigterm(self) -> None:
        if self._sigterm is not None:
            signal.signal(signal.SIGTERM, self._sigterm)

    def requests(self, seed: int) -> Iterator[RequestSpec]:
        w = self.opts.workload
        if self.sharegpt:
            return shuffled_cycle(self.sharegpt, seed)
        return synthetic_requests(w.input_tokens, w.output_tokens, prompt_kind=w.prompt_kind,
                                  vocab_size=self.vocab_size, seed=seed, tokenizer=self.tokenizer)

    def measure(self, load: LoadConfig) -> dict:
        """One load point; Ctrl-C stops it early with partial results (status 'interrupted')."""
        result = _event_loop_runner()(self._run(load))
        return self._document(load, result)

    async def _run(self, load: LoadConfig) -> LoadResult:
        w = self.opts.workload
        client = HttpClient(self.server.base_url)
        stop = StopSignal()
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, stop.set, "interrupted", "interrupted by Ctrl-C")
            loop.add_signal_handler(signal.SIGTERM, stop.set, "interrupted", "terminated (SIGTERM)")
        except (RuntimeError, ValueError):   # not the main thread: no signal handling there
            pass
        make_body = body_maker(self.server.served_model, chat=w.chat, temperature=w.temperature)
        try:
            return await run_load(client, self.requests(load.seed), make_body, load, stop=stop,
                                  server_alive=self.server.gone)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
            await client.close()

    def _document(self, load: LoadConfig, result: LoadResult) -> dict:
        goodput = goodput_limits_ms(self.opts.slos) if self.opts.slos else None
        metrics, per = compute_metrics(result.records, result.duration_s, goodput_slos_ms=goodput,
                                       tokenizer=self.tokenizer)
        client = client_report(result, load, metrics["completed"], self.opts.thresholds)
        errors = Counter(r.error for r in result.records if r.error)
        status = result.status
        exit_code = (EXIT_INTERRUPTED if status == "interrupted"
                     else EXIT_FAILED if status != "complete" or metrics["failed"] or not metrics["completed"]
                     else EXIT_OK)
        doc = {
            "schema": SCHEMA,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "tag": self.opts.tag, "backend": self.opts.backend,
            "status": status, "status_detail": result.status_detail, "exit_code": exit_code,
            "not_sent": result.not_sent,
            "plan": self.plan.model_dump(mode="json") if self.plan else None,
            "config": {"load": _load_dict(load), "workload": _workload_dict(self.opts.workload, self.vocab_size),
                       "slos": [s.label for s in self.opts.slos]},
            "server": {"base_url": self.server.base_url, "served_model": self.server.served_model,
                       "command": self.server.command, "notes": self.server.notes,
                       "startup_s": self.server.startup_s, "version": self.server.version},
            "metrics": metrics, "client": client,
            "errors": [{"error": e, "count": n} for e, n in errors.most_common()],
            "versions": versions(self.server.version), "gpu": gpu_name(), "git_rev": git_revision(),
            "command": self.opts.command,
            "samples": [_sample(r, m, result.t0) for r, m in zip(result.records, per)],
        }
        engine = self.server.engine_report()
        if engine:
            doc["server"]["engine"] = engine
        doc.update(self._prediction(load, metrics, result, engine))
        return doc

    def _prediction(self, load: LoadConfig, metrics: dict, result: LoadResult, engine: dict | None) -> dict:
        if self.plan is None:
            return {"predicted": None, "prediction_error": "no plan given", "vs_predicted": []}
        w = self.opts.workload
        workload = Workload(input_tokens=w.input_tokens, output_tokens=w.output_tokens,
                            rate_rps=None if math.isinf(load.rate_rps) else load.rate_rps,
                            concurrency=load.max_concurrency,
                            arrival=load.arrival, burstiness=load.burstiness)
        pred, why = predict(self.plan, workload, result.records, result.t0, engine)
        if pred is None:
            return {"predicted": None, "prediction_error": why, "vs_predicted": []}
        return {"predicted": pred.model_dump(mode="json"), "prediction_error": None,
                "vs_predicted": predicted_vs_measured(pred, metrics)}


def prompt_vocab(server_vocab: int | None, *models: str | None) -> int:
    """Where random prompt ids are drawn from without --vocab-size: below MAX_PROMPT_ID and inside the vocabulary
    the server reports, else that of the first of `models` (--model, the plan's, the served name) known here,
    else ANY_VOCAB."""
    from backends.engine.config import resolve_model   # torch-free

    if server_vocab:
        return min(MAX_PROMPT_ID, server_vocab)
    for model in filter(None, models):
        try:
            return min(MAX_PROMPT_ID, resolve_model(model)[0].vocab_size)
        except (PlanError, ValueError, OSError):        # a name only the server knows
            continue
    return ANY_VOCAB


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1e3, 4)


def _sample(rec, m, t0: float) -> dict:
    """Per-request detail: what compare.py bootstraps from, and what --per-request writes."""
    return {
        "i": rec.index, "ok": m.ok, "error": rec.error,
        "ttft_ms": _ms(m.ttft_s), "tpot_ms": _ms(m.tpot_s), "e2el_ms": _ms(m.e2el_s),
        "ttft_content_ms": _ms(m.ttft_content_s), "itl_ms": [_ms(g) for g in m.itl_s],
        "prompt_tokens": m.prompt_tokens, "server_prompt_tokens": m.server_prompt_tokens,
        "output_tokens": m.output_tokens, "output_tokens_source": m.output_tokens_source,
        "t_start_s": round(rec.t_start - t0, 6) if rec.t_start else None,
        "client_queue_ms": _ms(rec.t_start - rec.t_dispatch) if rec.t_start else None,
    }


def _load_dict(load: LoadConfig) -> dict:
    d = asdict(load)
    d["rate_rps"] = None if math.isinf(load.rate_rps) else load.rate_rps   # JSON has no inf
    return d


def _workload_dict(w: WorkloadOptions, vocab_size: int) -> dict:
    return {"input_tokens": w.input_tokens.model_dump(exclude_none=True),
            "output_tokens": w.output_tokens.model_dump(exclude_none=True),
            "prompt_kind": w.prompt_kind, "vocab_size": vocab_size,
            "sharegpt": str(w.sharegpt) if w.sharegpt else None,
            "tokenizer": str(w.tokenizer) if w.tokenizer else None, "chat": w.chat, "temperature": w.temperature}
