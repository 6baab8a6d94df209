"""OpenAI-compatible HTTP server (aiohttp) over LLMEngine.

The engine steps in its own thread; the event loop only parses requests, queues them and streams tokens,
so HTTP handling continues while a GPU step runs. A request whose client goes away is aborted, which
frees its KV blocks.

    python -m backends.engine.server --model tiny --device cpu --port 8000    (same flags as `plan serve`)
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
import traceback
import uuid
from pathlib import Path

from aiohttp import web

from .config import EngineError, SamplingParams
from .engine import STEP_TIME_BUCKETS_S, LLMEngine, RequestOutput
from .model_runner import log_json


class RequestError(ValueError):
    """Invalid request: answered with HTTP 400 and this message."""


class AsyncEngine:
    """Owns the engine thread; routes each step's outputs to the waiting request's asyncio queue."""

    def __init__(self, engine: LLMEngine, loop: asyncio.AbstractEventLoop):
        self.engine = engine
        self.loop = loop
        self.queues: dict[str, asyncio.Queue] = {}
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stopped:
            if not self.engine.has_unfinished():
                self._wake.wait(timeout=0.1)
                self._wake.clear()
                continue
            try:
                outputs = self.engine.step()
            except Exception as e:  # keep serving; the requests in flight get the error
                traceback.print_exc()
                self.loop.call_soon_threadsafe(self._fail_all, e)
                self._abort_all()
                continue
            if outputs:
                self.loop.call_soon_threadsafe(self._dispatch, outputs)

    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            queue = self.queues.get(out.request_id)
            if queue is not None:
                queue.put_nowait(out)

    def _fail_all(self, error: Exception) -> None:
        for queue in self.queues.values():
            queue.put_nowait(error)

    def _abort_all(self) -> None:
        for request_id in list(self.engine.seqs):
            self.engine.abort_request(request_id)

    def add(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self.engine.add_request(prompt_token_ids, params, request_id)   # EngineError: rejected, nothing queued
        self.queues[request_id] = queue
        self._wake.set()
        return queue

    def abort(self, request_id: str) -> None:
        self.queues.pop(request_id, None)
        self.engine.abort_request(request_id)
        self._wake.set()

    def release(self, request_id: str) -> None:
        self.queues.pop(request_id, None)


class Detokenizer:
    """Incremental text: re-decodes a short window so multi-token characters come out whole."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = self.read_offset = 0

    def add(self, new_ids: list[int]) -> str:
        if self.tokenizer is None:
            return ""
        self.ids += new_ids
        prefix = self.tokenizer.decode(self.ids[self.prefix_offset:self.read_offset], skip_special_tokens=True)
        full = self.tokenizer.decode(self.ids[self.prefix_offset:], skip_special_tokens=True)
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return full[len(prefix):]
        return ""


def _parse_completion(body, tokenizer, served_name: str):
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    model = body.get("model")
    if model is not None and model != served_name:
        raise RequestError(f"model {model!r} is not served here (serving {served_name!r})")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]      # a batch of one
    if isinstance(prompt, str):
        if tokenizer is None:
            raise RequestError("this model folder has no tokenizer.json: send the prompt as a list of token ids")
        prompt_ids = tokenizer.encode(prompt).ids
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        prompt_ids = prompt
    else:
        raise RequestError("prompt must be a string or a non-empty list of token ids (one prompt per request)")
    if body.get("n", 1) != 1 or body.get("best_of", 1) not in (1, None):
        raise RequestError("only n=1 is supported")
    if body.get("top_p", 1.0) not in (1, 1.0, None) or body.get("top_k", -1) not in (-1, 0, None):
        raise RequestError("top_p and top_k are not supported (temperature sampling only)")
    max_tokens = body.get("max_tokens", 16)
    temperature = body.get("temperature", 1.0)
    seed = body.get("seed")
    ignore_eos = body.get("ignore_eos", False)
    stream = body.get("stream", False)
    stream_options = body.get("stream_options") or {}
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise RequestError("max_tokens must be a positive integer")
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or temperature < 0:
        raise RequestError("temperature must be a number >= 0")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise RequestError("seed must be an integer")
    if not isinstance(ignore_eos, bool) or not isinstance(stream, bool) or not isinstance(stream_options, dict):
        raise RequestError("ignore_eos and stream must be booleans, stream_options an object")
    params = SamplingParams(max_tokens=max_tokens, temperature=float(temperature), seed=seed, ignore_eos=ignore_eos)
    return prompt_ids, params, stream, bool(stream_options.get("include_usage", False))


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "BadRequestError", "code": 400}}, status=400)


def build_app(engine: LLMEngine, served_name: str, tokenizer=None) -> web.Application:
    app = web.Application()
    state: dict = {}

    async def on_startup(app):
        state["async"] = AsyncEngine(engine, asyncio.get_running_loop())
        state["async"].start()

    async def on_cleanup(app):
        state["async"].stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)

    async def completions(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _bad_request("the body is not valid JSON")
        try:
            prompt_ids, params, stream, include_usage = _parse_completion(body, tokenizer, served_name)
            request_id = f"cmpl-{uuid.uuid4().hex}"
            queue = state["async"].add(request_id, prompt_ids, params)
        except (RequestError, EngineError) as e:
            return _bad_request(str(e))
        created = int(time.time())
        base = {"id": request_id, "object": "text_completion", "created": created, "model": served_name}
        detok = Detokenizer(tokenizer)
        finished = False
        try:
            if stream:
                response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
                await response.prepare(request)
            text, token_ids, last = [], [], None
            while not finished:
                out = await queue.get()
                if isinstance(out, Exception):
                    raise web.HTTPInternalServerError(text=f"engine error: {out}")
                finished, last = out.finished, out
                piece = detok.add(out.new_token_ids)
                if stream and (out.new_token_ids or finished):
                    choice = {"index": 0, "text": piece, "token_ids": out.new_token_ids, "logprobs": None,
                              "finish_reason": out.finish_reason if finished else None}
                    await response.write(f"data: {json.dumps({**base, 'choices': [choice]})}\n\n".encode())
                text.append(piece)
                token_ids += out.new_token_ids
            usage = {"prompt_tokens": last.num_prompt_tokens, "completion_tokens": last.num_output_tokens,
                     "total_tokens": last.num_prompt_tokens + last.num_output_tokens}
            if not stream:
                choice = {"index": 0, "text": "".join(text), "token_ids": token_ids, "logprobs": None,
                          "finish_reason": last.finish_reason}
                return web.json_response({**base, "choices": [choice], "usage": usage})
            if include_usage:
                await response.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        finally:
            # A client that went away (write error, or handler cancelled) must not keep its blocks.
            (state["async"].release if finished else state["async"].abort)(request_id)

    async def models(request):
        return web.json_response({"object": "list", "data": [
            {"id": served_name, "object": "model", "created": int(time.time()), "owned_by": "built-in-engine",
             "max_model_len": engine.max_model_len,
             # Not in OpenAI's schema: lets a load generator draw random prompt ids this model accepts.
             "vocab_size": engine.config.model.vocab_size}]})

    async def health(request):
        return web.json_response({"status": "ok"})

    async def metrics(request):
        return web.Response(text=render_metrics(engine), content_type="text/plain")

    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


def render_metrics(engine: LLMEngine) -> str:
    """Prometheus text format."""
    s, sched, bm = engine.stats, engine.scheduler, engine.block_manager
    used = bm.num_blocks - bm.num_free_blocks
    lines = []

    def metric(name, kind, help_text, value):
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"])
    metric("engine_requests_running", "gauge", "Requests in the running batch.", len(sched.running))
    metric("engine_requests_waiting", "gauge", "Requests waiting (new or preempted).", len(sched.waiting))
    metric("engine_kv_cache_usage_ratio", "gauge", "Fraction of KV blocks in use.", used / bm.num_blocks)
    metric("engine_kv_cache_blocks", "gauge", "KV cache blocks allocated at start-up.", bm.num_blocks)
    metric("engine_kv_cache_tokens", "gauge", "KV cache capacity in tokens.", bm.num_blocks * bm.block_size)
    metric("engine_generation_tokens_total", "counter", "Tokens generated.", s.generation_tokens_total)
    metric("engine_prompt_tokens_total", "counter", "Prompt tokens fed.", s.prompt_tokens_total)
    metric("engine_requests_finished_total", "counter", "Requests finished.", s.requests_finished_total)
    metric("engine_preemptions_total", "counter", "Sequences preempted (recomputed later).", sched.num_preemptions)
    name = "engine_step_time_seconds"
    lines += [f"# HELP {name} Wall time of an engine step, including its sync.", f"# TYPE {name} histogram"]
    for bound, count in zip(STEP_TIME_BUCKETS_S, s.step_time_bucket_counts):   # counts are cumulative
        lines.append(f'{name}_bucket{{le="{bound}"}} {count}')
    lines += [f'{name}_bucket{{le="+Inf"}} {s.num_steps}', f"{name}_sum {s.step_time_sum_s}",
              f"{name}_count {s.num_steps}"]
    return "\n".join(lines) + "\n"


def load_tokenizer(folder: Path | None):
    if folder is None or not (folder / "tokenizer.json").exists():
        return None
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(folder / "tokenizer.json"))


async def serve(engine: LLMEngine, host: str, port: int, served_name: str, tokenizer=None) -> None:
    app = build_app(engine, served_name, tokenizer)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = site._server.sockets[0].getsockname()[1]
    log_json({"event": "listening", "host": host, "port": bound_port, "model": served_name})
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    from .cli import main
    main()
