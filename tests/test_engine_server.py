"""The engine's HTTP server end to end: a subprocess on 127.0.0.1 serving a tiny random model (CPU)."""
import http.client
import json
import os
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("torch")
tokenizers = pytest.importorskip("tokenizers")

TINY_CONFIG = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 512,
               "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "eos_token_id": 2}
MAX_MODEL_LEN = 512


def make_model_folder(path):
    (path / "config.json").write_text(json.dumps(TINY_CONFIG))
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 50, trainer)
    tok.save(str(path / "tokenizer.json"))
    return tok


@pytest.fixture(scope="module", params=[False, True], ids=["sync", "async-scheduling"])
def server(tmp_path_factory, request):
    folder = tmp_path_factory.mktemp("tiny-model")
    tok = make_model_folder(folder)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "backends.engine.server", "--model", str(folder), "--device", "cpu", "--port", "0",
         "--num-kv-blocks", "64", "--max-model-len", str(MAX_MODEL_LEN), "--max-num-seqs", "4",
         *(["--async-scheduling"] if request.param else [])],
        stderr=subprocess.PIPE, text=True, env=env)
    port, lines = None, []
    deadline = time.time() + 180
    while port is None and time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if '"listening"' in line:
            port = json.loads(line)["port"]
    if port is None:
        proc.kill()
        pytest.fail("server did not start:\n" + "".join(lines))
    # Keep reading stderr: a full pipe would block the server on its next log line.
    threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True).start()
    yield {"port": port, "tokenizer": tok, "model": folder.name, "log": lines}
    proc.terminate()
    proc.wait(timeout=30)


def request(server, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=60)
    data = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    payload = resp.read().decode()
    conn.close()
    return resp.status, payload


def sse_events(raw: str):
    events = []
    for message in raw.split("\n\n"):
        for line in message.splitlines():
            if line.startswith("data: "):
                events.append(line[6:])
    return events


def metrics(server) -> dict:
    _, text = request(server, "GET", "/metrics")
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and line[0] != "#"}


def test_health_models_and_startup_line(server):
    assert request(server, "GET", "/health")[0] == 200
    status, body = request(server, "GET", "/v1/models")
    assert status == 200 and json.loads(body)["data"][0]["id"] == server["model"]
    kv = json.loads(next(line for line in server["log"] if '"kv_cache"' in line))
    assert kv["num_kv_blocks"] == 64 and kv["kv_capacity_tokens"] == 64 * 16
    assert metrics(server)["engine_kv_cache_blocks"] == 64


def test_models_report_the_vocabulary_and_bench_defaults_fit_it(server, tmp_path):
    """`plan bench run` without a plan or --vocab-size drew ids below 1000: 400s from this 512-token model."""
    import typer
    from typer.testing import CliRunner

    from backends.harness.cli import register

    _, body = request(server, "GET", "/v1/models")
    assert json.loads(body)["data"][0]["vocab_size"] == TINY_CONFIG["vocab_size"]
    app = typer.Typer()
    register(app)
    app.callback()(lambda: None)
    out = tmp_path / "run.json"
    r = CliRunner().invoke(app, ["bench", "run", "--backend", "url", "--url", f"http://127.0.0.1:{server['port']}",
                                 "--rate", "20", "--num-requests", "6", "--input-len", "16", "--output-len", "4",
                                 "--json", str(out), "--no-db"])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["metrics"]["completed"] == 6 and doc["config"]["workload"]["vocab_size"] == 512


def test_streaming_with_usage(server):
    body = {"model": server["model"], "prompt": [5, 6, 7, 8], "max_tokens": 7, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True}
    status, raw = request(server, "POST", "/v1/completions", body)
    assert status == 200
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    tokens = [c for c in chunks if c["choices"]]
    assert len(tokens) == 7 and all(c["object"] == "text_completion" for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in tokens] == [None] * 6 + ["length"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}
    # greedy: the non-streaming answer has the same tokens
    status, plain = request(server, "POST", "/v1/completions", {**body, "stream": False})
    assert json.loads(plain)["choices"][0]["token_ids"] == [c["choices"][0]["token_ids"][0] for c in tokens]


def test_text_prompt_uses_the_tokenizer(server):
    text = "the quick brown fox"
    status, body = request(server, "POST", "/v1/completions",
                           {"prompt": text, "max_tokens": 5, "ignore_eos": True, "temperature": 0.7, "seed": 3})
    assert status == 200
    doc = json.loads(body)
    assert doc["usage"]["prompt_tokens"] == len(server["tokenizer"].encode(text).ids)
    assert doc["usage"]["completion_tokens"] == 5
    assert doc["choices"][0]["text"] == server["tokenizer"].decode(doc["choices"][0]["token_ids"])


@pytest.mark.parametrize("body", [
    "not json", [1, 2], {"max_tokens": 3}, {"prompt": [], "max_tokens": 3}, {"prompt": [1], "max_tokens": 0},
    {"prompt": [1], "max_tokens": "3"}, {"prompt": [512], "max_tokens": 3}, {"prompt": [1], "temperature": -1},
    {"prompt": [1] * 500, "max_tokens": 100}, {"prompt": [1], "model": "other"}, {"prompt": [1], "n": 2},
    {"prompt": [[1], [2]]}, {"prompt": [1], "stream": "yes"}, {"prompt": [1], "seed": 1.5},
])
def test_bad_requests_get_400(server, body):
    status, payload = request(server, "POST", "/v1/completions", body)
    assert status == 400, payload
    assert json.loads(payload)["error"]["message"]


def test_disconnect_frees_the_sequence(server):
    before = metrics(server)["engine_generation_tokens_total"]
    conn = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=60)
    max_tokens = MAX_MODEL_LEN - 4
    conn.request("POST", "/v1/completions", body=json.dumps(
        {"prompt": [1, 2, 3, 4], "max_tokens": max_tokens, "stream": True, "ignore_eos": True}),
        headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read(6) == b"data: "
    conn.sock.shutdown(2)
    conn.close()
    deadline = time.time() + 30
    while time.time() < deadline:
        m = metrics(server)
        if m["engine_requests_running"] == 0 and m["engine_kv_cache_usage_ratio"] == 0:
            break
        time.sleep(0.05)
    assert m["engine_requests_running"] == 0 and m["engine_kv_cache_usage_ratio"] == 0
    assert m["engine_generation_tokens_total"] - before < max_tokens     # stopped early


def test_plan_file_maps_onto_the_engine(tmp_path):
    from backends.engine.cli import engine_config_from_args
    from planner.errors import UsageError
    from planner.schemas import Plan

    path = tmp_path / "plan.yaml"
    Plan(model="llama-8b", hardware="H200", max_num_seqs=64, max_num_batched_tokens=4096,
         gpu_memory_utilization=0.8).dump(path)
    cfg = engine_config_from_args(str(path), None, device="cpu", num_kv_blocks=8)
    assert (cfg.model.name, cfg.max_num_seqs, cfg.max_num_batched_tokens, cfg.gpu_memory_utilization,
            cfg.num_kv_blocks, cfg.dtype) == ("Llama-3.1-8B", 64, 4096, 0.8, 8, "bf16")
    Plan(model="llama-8b", hardware="H200", tp=2, num_gpus=2, weight_dtype="fp8", kv_dtype="fp8").dump(path)
    cfg = engine_config_from_args(str(path), None, device="cpu")
    assert (cfg.tp, cfg.dtype, cfg.weight_dtype, cfg.kv_dtype, cfg.quant) == (2, "bf16", "fp8", "fp8", "fp8")
    for bad in ({"pp": 2, "num_gpus": 2}, {"kv_dtype": "int8"}):
        Plan(model="llama-8b", hardware="H200", **bad).dump(path)
        with pytest.raises(UsageError, match="not supported"):
            engine_config_from_args(str(path), None, device="cpu")


def test_unknown_flag_is_a_usage_error():
    r = subprocess.run([sys.executable, "-m", "backends.engine.server", "--model", "tiny", "--bogus"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "No such option: --bogus" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
