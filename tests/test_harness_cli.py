"""`plan bench run/history` end to end: a server, the run, JSON and the results database; a server
that dies mid-run; the vLLM flag mapping."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from backends.harness import bench, results_db
from backends.harness.cli import register
from backends.harness.selfcheck import start_noop
from backends.harness.servers import RunningServer
from planner.launch import vllm_args
from planner.schemas import Plan

PLAN = {"model": "Llama-3.1-8B", "hardware": "H100-SXM"}


@pytest.fixture()
def app():
    app = typer.Typer()
    register(app)
    app.callback()(lambda: None)
    return app


@pytest.fixture()
def plan_file(tmp_path):
    path = tmp_path / "plan.yaml"
    Plan(**PLAN).dump(path)
    return path


def test_url_backend_end_to_end(app, plan_file, tmp_path):
    noop = start_noop(tokens=8, ttft_ms=2.0, itl_ms=1.0)
    try:
        out, db = tmp_path / "run.json", tmp_path / "r.db"
        r = CliRunner().invoke(app, ["bench", "run", "--plan", str(plan_file), "--backend", "url", "--url", noop.base_url,
                                     "--rate", "100", "--num-requests", "60", "--warmup", "5", "--output-len", "8",
                                     "--slo", "ttft_p99<=500ms", "--json", str(out), "--per-request",
                                     "--db", str(db), "--tag", "e2e"])
        assert r.exit_code == 0, r.output
    finally:
        noop.stop()
    doc = json.loads(out.read_text())
    assert doc["status"] == "complete" and doc["metrics"]["completed"] == 60 and len(doc["samples"]) == 60
    assert doc["metrics"]["total_output_tokens"] == 480 and "request_goodput" in doc["metrics"]
    assert doc["plan"]["model"] == "Llama-3.1-8B" and doc["client"]["offered_rate_rps"] == 100
    # at a rate, the prediction beside the measurement simulates the very requests sent (their arrival offsets)
    assert doc["predicted"]["simulation"]["stream"] == "the requests sent"
    assert doc["predicted"]["simulation"]["requests"] == 60
    assert "simulated at step times" in doc["predicted"]["interval_basis"]     # the interval under load
    row = next(r for r in doc["vs_predicted"] if r["metric"] == "p90_ttft_ms")
    assert row["interval"][0] <= row["predicted"] <= row["interval"][1] and isinstance(row["inside"], bool)
    assert {"mean_ttft_ms", "p90_ttft_ms", "p99_itl_ms"} <= {row["metric"] for row in doc["vs_predicted"]}
    saved = results_db.load_run("e2e", db)
    assert saved["id"] == doc["id"] and len(saved["samples"]) == 60 and saved["git_rev"]
    history = CliRunner().invoke(app, ["bench", "history", "--db", str(db)])
    assert history.exit_code == 0 and "e2e" in history.output


def test_server_killed_mid_run(app, plan_file, tmp_path, monkeypatch):
    """The server dies after 1 s of a 10 s run: failures counted, partial results saved, exit 1."""
    noop = start_noop(tokens=40, ttft_ms=5.0, itl_ms=10.0)
    monkeypatch.setattr(bench, "start_server", lambda *a: RunningServer(
        "builtin", noop.base_url, "noop", command=noop.cmd, gone=noop.gone, _managed=noop))
    killer = threading.Timer(1.0, noop.proc.kill)
    killer.start()
    out, db = tmp_path / "run.json", tmp_path / "r.db"
    r = CliRunner().invoke(app, ["bench", "run", "--plan", str(plan_file), "--backend", "builtin",
                                                 "--rate", "20", "--num-requests", "200", "--output-len", "40",
                                                 "--json", str(out), "--db", str(db)])
    killer.cancel()
    assert r.exit_code == 1, r.output
    assert "server_died" in r.stderr and "partial results saved" in r.stderr
    doc = json.loads(out.read_text())
    assert doc["status"] == "server_died" and "exited" in doc["status_detail"]
    assert doc["metrics"]["failed"] > 0 and doc["not_sent"] > 100
    assert results_db.load_run(str(doc["id"]), db)["status"] == "server_died"


def test_usage_errors_are_one_line_exit_2(app, plan_file):
    r = CliRunner().invoke(app, ["bench", "run", "--backend", "url", "--url", "http://127.0.0.1:9"])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "cannot reach" in r.stderr
    r = CliRunner().invoke(app, ["bench", "run", "--backend", "builtin"])
    assert r.exit_code == 2 and "needs --plan" in r.stderr
    r = CliRunner().invoke(app, ["bench", "run", "--plan", str(plan_file), "--backend", "url",
                                                 "--url", "http://x", "--slo", "fast please"])
    assert r.exit_code == 2 and "malformed SLO" in r.stderr


@pytest.fixture()
def no_server(monkeypatch):
    """Fails the test if a server is started or reached: every check must come before that."""
    def refuse(*_args):
        raise AssertionError("a server was started before the options were checked")
    monkeypatch.setattr(bench, "start_server", refuse)


def _write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("args,needle", [
    (["--rate", "-1"], "--rate must be a positive"),
    (["--rate", "nan"], "--rate must be a positive"),
    (["--num-requests", "-5"], "--num-requests must be an integer >= 1"),
    (["--num-requests", "0"], "--num-requests must be an integer >= 1"),
    (["--arrival", "foo", "--rate", "10"], "unknown --arrival 'foo'"),
    (["--prompt-kind", "foo"], "unknown --prompt-kind 'foo'"),
    (["--concurrency", "0"], "--concurrency must be an integer >= 1"),
    (["--arrival", "gamma", "--burstiness", "0", "--rate", "10"], "--burstiness must be a positive number"),
    (["--warmup", "-1"], "--warmup must be an integer >= 0"),
    (["--duration", "0", "--rate", "5"], "--duration must be a positive number"),
    (["--vocab-size", "5"], "--vocab-size must be above 10"),
    (["--sharegpt", "/nonexistent.json"], "/nonexistent.json"),
    (["--input-dist", "foo"], "bad --input-dist: kind: Input should be 'fixed'"),
    (["--input-len", "0"], "bad --input-len: mean: Input should be greater than 0"),
    (["--search-rate", "abc", "--slo", "ttft=200ms"], "--search-rate takes LOW:HIGH"),
    (["--search-rate", "1:2", "--sweep-rates", "1,2", "--slo", "ttft=200ms"], "exclude each other"),
    (["--sweep-rates", "1,-2"], "--sweep-rates takes comma-separated positive numbers"),
    (["--sweep-concurrencies", "1.5"], "--sweep-concurrencies takes comma-separated positive integers"),
    (["--slo", "e2e=5"], "has no unit: write e2e=5ms or e2e=5s"),
    (["--slo", "ttft_p99=fast"], "malformed SLO"),
])
def test_bad_run_options_exit_2_before_any_server(app, no_server, args, needle):
    r = CliRunner().invoke(app, ["bench", "run", "--backend", "url", "--url", "http://127.0.0.1:9", "--no-db", *args])
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and needle in r.stderr and "Traceback" not in r.output


def test_malformed_sharegpt_is_named(app, no_server, tmp_path):
    for text in ('[{"x": 1}]', "{not json", ""):
        path = _write(tmp_path / "sg.json", text)
        r = CliRunner().invoke(app, ["bench", "run", "--backend", "url", "--url", "http://127.0.0.1:9", "--no-db",
                                     "--sharegpt", path])
        assert r.exit_code == 2 and path in r.stderr and r.stderr.count("\n") == 1, r.output


@pytest.mark.parametrize("plan_text,needle", [
    ("model: [unclosed\n  x: :\n", "is not valid YAML: line 2, column 4"),
    ("", "is empty: it needs at least model: and hardware:"),
    ("model: tiny\nhardware: h100\nmax_num_seqs: -1\n", "max_num_seqs: Input should be greater than 0 (got -1)"),
    ("model: nosuchmodel\nhardware: h100\n", "unknown model 'nosuchmodel'"),
    ("model: tiny\nhardware: h100\nnum_gpus: 2\npp: 2\n", "pipeline parallelism is not supported"),
])
def test_bad_plan_exits_2_before_the_builtin_server_starts(app, no_server, tmp_path, plan_text, needle):
    plan = _write(tmp_path / "plan.yaml", plan_text)
    r = CliRunner().invoke(app, ["bench", "run", "--plan", plan, "--backend", "builtin", "--device", "cpu", "--no-db"])
    assert r.exit_code == 2, r.output
    assert needle in r.stderr and r.stderr.count("\n") == 1


def test_builtin_device_and_load_format_checked_up_front(app, no_server, tmp_path):
    plan = _write(tmp_path / "plan.yaml", "model: tiny\nhardware: h100\n")
    for args, needle in ((["--device", "tpu"], "unknown --device 'tpu'"), (["--load-format", "auto"], "load format")):
        r = CliRunner().invoke(app, ["bench", "run", "--plan", plan, "--backend", "builtin", "--no-db", *args])
        assert r.exit_code == 2 and needle in r.stderr, r.output


def test_outputs_checked_before_the_run(app, no_server, tmp_path):
    r = CliRunner().invoke(app, ["bench", "run", "--backend", "url", "--url", "http://127.0.0.1:9", "--no-db",
                                 "--json", str(tmp_path)])
    assert r.exit_code == 2 and "is a directory" in r.stderr


def test_missing_output_folders_are_created_and_both_slo_forms_accepted(app, tmp_path):
    noop = start_noop(tokens=2, ttft_ms=1.0, itl_ms=1.0)
    try:
        out, db = tmp_path / "new" / "dir" / "run.json", tmp_path / "dbs" / "r.db"
        r = CliRunner().invoke(app, ["bench", "run", "--backend", "url", "--url", noop.base_url, "--num-requests", "5",
                                     "--slo", "ttft=500ms", "--slo", "tpot_p99<=1s", "--json", str(out),
                                     "--db", str(db)])
    finally:
        noop.stop()
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["config"]["slos"] == ["ttft<=500ms", "tpot_p99<=1000ms"] and results_db.load_run(str(doc["id"]), db)


def test_history_and_compare_refuse_what_is_not_there(app, tmp_path):
    r = CliRunner().invoke(app, ["bench", "history", "--db", str(tmp_path / "none" / "x.db")])
    assert r.exit_code == 2 and "no results database" in r.stderr and "plan bench run" in r.stderr
    for text, needle in (("{bad", "is not valid JSON: line 1, column 2"), ("", "is empty"),
                         ('{"runs": []}', "several runs"), ("[1]", "holds a JSON list"),
                         ('{"a": 1}', "has no per-request samples")):
        path = _write(tmp_path / "run.json", text)
        r = CliRunner().invoke(app, ["bench", "compare", path, "--baseline", path])
        assert r.exit_code == 2 and needle in r.stderr and r.stderr.count("\n") == 1, r.output


def test_prompt_ids_stay_inside_the_vocabulary():
    assert bench.prompt_vocab(512, "llama-8b") == 512                # what the server reports comes first
    assert bench.prompt_vocab(None, None, "tiny") == 512             # else a model known here
    assert bench.prompt_vocab(None, "Llama-3.1-8B") == bench.MAX_PROMPT_ID
    assert bench.prompt_vocab(None, "served-name-only-the-server-knows") == bench.ANY_VOCAB


def test_a_failing_request_source_is_a_client_error_not_an_empty_run():
    import asyncio

    from backends.harness.http_client import HttpClient
    from backends.harness.runner import LoadConfig, run_load

    def broken():
        raise ValueError("no prompts")
        yield

    async def go():
        client = HttpClient("http://127.0.0.1:9")
        try:
            return await run_load(client, broken(), lambda s: b"", LoadConfig(num_requests=3))
        finally:
            await client.close()
    result = asyncio.run(go())
    assert result.status == "client_error" and "ValueError: no prompts" in result.status_detail


def test_vllm_flags():
    plan = Plan(model="m", hardware="H100-SXM", num_gpus=8, tp=2, pp=2, replicas=2, weight_dtype="fp8",
                kv_dtype="fp8", max_num_seqs=64, max_num_batched_tokens=4096, gpu_memory_utilization=0.85,
                block_size=32, max_model_len=8192)
    args, notes = vllm_args(plan, load_format="dummy")
    flags = dict(zip(args[::2], args[1::2]))
    assert flags == {"--tensor-parallel-size": "2", "--pipeline-parallel-size": "2", "--data-parallel-size": "2",
                     "--quantization": "fp8", "--kv-cache-dtype": "fp8", "--max-num-seqs": "64",
                     "--max-num-batched-tokens": "4096", "--gpu-memory-utilization": "0.85",
                     "--block-size": "32", "--max-model-len": "8192", "--load-format": "dummy"}
    assert not notes
    args, notes = vllm_args(Plan(model="m", hardware="h", weight_dtype="int8"), load_format=None)
    assert "--quantization" not in args and "--load-format" not in args and "pre-quantized" in notes[0]


@pytest.mark.skipif(importlib.util.find_spec("backends.engine.server") is None,
                    reason="the built-in engine server (backends.engine.server) is not there yet")
def test_builtin_engine_end_to_end(app, tmp_path):
    plan = tmp_path / "plan.yaml"
    Plan(model="Llama-3.2-1B", hardware="H100-SXM", max_num_seqs=4, max_model_len=256).dump(plan)
    out = tmp_path / "run.json"
    r = CliRunner().invoke(app, ["bench", "run", "--plan", str(plan), "--backend", "builtin", "--num-requests", "4",
                                 "--concurrency", "2", "--input-len", "16", "--output-len", "4",
                                 "--json", str(out), "--no-db", "--startup-timeout", "300"])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["metrics"]["completed"] == 4
    assert doc["server"]["engine"]["kv_capacity_tokens"] > 0      # the engine's report, which the prediction uses


def _children(pid: int) -> list[int]:
    kids = []
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return kids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc for the server process")
def test_sigterm_stops_the_server_it_started(tmp_path):
    """A CI job's timeout or `kill` (SIGTERM) must not leave the builtin server running: the server has its own
    process group, so only the client's cleanup stops it."""
    plan = tmp_path / "plan.yaml"
    plan.write_text("model: tiny\nhardware: H100-SXM\nmax_num_seqs: 4\nmax_model_len: 256\n")
    p = subprocess.Popen([sys.executable, "-m", "planner.cli", "bench", "run", "--plan", str(plan), "--backend",
                          "builtin", "--device", "cpu", "--rate", "2", "--num-requests", "100000", "--input-len", "8",
                          "--output-len", "4", "--no-db"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not _children(p.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        server = _children(p.pid)
        assert server, "the builtin server never started"
        time.sleep(1)
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) in (130, 143), p.stderr.read().decode()
        with pytest.raises(ProcessLookupError):
            os.kill(server[0], 0)
    finally:
        if p.poll() is None:
            p.kill()
