"""`plan bench run/history` end to end: a server, the run, JSON and the results database; a server
that dies mid-run; the vLLM flag mapping."""
import importlib.util
import json
import threading

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
    assert r.exit_code == 2 and "bad SLO" in r.stderr


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
