"""The `plan` command line: real subprocesses for the main paths, in-process fuzzing of the parsers."""
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from planner.errors import UsageError
from planner.parse import parse_duration_s, parse_list, parse_slo


def plan(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "planner.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_recommend_llama70b_ttft_json(tmp_path):
    out = tmp_path / "plan.yaml"
    r = plan("recommend", "--model", "llama-70b", "--slo", "ttft=200ms", "--json", "--out", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["meets_slo"] and doc["ranked"]
    best = doc["ranked"][0]
    assert best["prediction"]["ttft_s"] <= 0.2
    assert best["prediction"]["memory"]["fits"]
    assert doc["launch_command"].startswith("vllm serve meta-llama/Llama-3.1-70B")
    from planner.schemas import Plan
    assert Plan.load(out).model == "Llama-3.1-70B"


def test_recommend_table_and_explain():
    r = plan("recommend", "--model", "llama-8b", "--slo", "tpot=20ms", "--gpus", "h100,l40s", "--top", "3")
    assert r.returncode == 0, r.stderr
    assert "Launch with vLLM" in r.stdout and "vllm serve" in r.stdout
    r = plan("explain", "--model", "llama-70b", "--gpu", "h200", "--tp", "4", "--batch", "16", "--json")
    doc = json.loads(r.stdout)
    names = {o["op"] for o in doc["decode_step"]["ops"]}
    assert {"qkv_proj", "attention_decode", "mlp_gate_up", "allreduce", "lm_head"} <= names
    assert doc["decode_step"]["bottleneck"] in ("memory", "compute", "communication", "overhead")


def test_impossible_slo_explains_binding_constraint():
    r = plan("recommend", "--model", "llama-405b", "--slo", "ttft=1ms", "--gpus", "h100", "--max-gpus", "8")
    assert r.returncode == 3
    assert "binding constraint" in r.stdout and "fastest TTFT" in r.stdout


def test_explain_says_by_how_much_it_misses():
    r = plan("explain", "--model", "llama-70b", "--gpu", "l4")
    assert r.returncode == 0 and "Does not fit" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["recommend", "--model", "llama-7000b"], "unknown model"),
    (["recommend", "--model", "llama-70b", "--gpus", "h1000"], "unknown GPU"),
    (["recommend", "--model", "llama-70b", "--slo", "ttft=fast"], "accepted forms"),
    (["recommend", "--model", "llama-70b", "--slo", "ttft=-1ms"], "accepted forms"),
    (["recommend", "--model", "llama-70b", "--slo", "foo=1ms"], "accepted forms"),
    (["explain", "--model", "llama-70b", "--gpu", "h100", "--tp", "0"], "--tp"),
    (["explain", "--model", "llama-70b", "--gpu", "h100", "--weight-dtype", "fp4"], "weight-dtype"),
    # the parser's own errors (typer 0.2x raises its vendored copy of click's, not click's)
    (["recommend", "--model", "llama-70b", "--gpu", "h100"], "no such option: --gpu"),
    (["serve", "--model", "tiny", "--bogus"], "no such option: --bogus"),
    (["recommend", "--model", "llama-70b", "--slo"], "requires an argument"),
])
def test_bad_input_exit_2_one_line(args, needle):
    r = plan(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    assert needle.lower() in r.stderr.lower()


def test_unknown_model_suggests_closest():
    r = plan("recommend", "--model", "lama-70b")
    assert r.returncode == 2 and "did you mean llama-3.1-70b" in r.stderr.lower()


def test_help_documents_examples():
    for cmd in ("recommend", "explain"):
        r = plan(cmd, "--help")
        assert r.returncode == 0 and "Example" in r.stdout and "--json" in r.stdout


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_option_parsers_never_crash(text):
    for parser in (parse_slo, parse_duration_s):
        try:
            parser(text)
        except UsageError as e:
            assert str(e) and "\n" not in str(e)
    assert all(parse_list(text)) or parse_list(text) == []


def test_slo_forms():
    s = parse_slo("ttft_p99=500ms")
    assert (s.metric, s.percentile, s.limit_s) == ("ttft", 99.0, 0.5)
    assert parse_slo("e2e=5s").limit_s == 5.0
    assert parse_slo("tpot=30").limit_s == pytest.approx(0.03)
