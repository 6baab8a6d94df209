"""planner.api: what the CLI's commands compute, and the inputs they refuse (UsageError: one line, exit 2)."""
import json

import pytest

from planner import api, catalog
from planner.errors import UsageError
from planner.launch import vllm_command
from planner.schemas import Plan


@pytest.mark.parametrize("tp,needle", [(3, "does not divide 32 attention heads"),
                                       (16, "exceeds the 8 GPUs of one H100-SXM node")])
def test_explain_refuses_what_recommend_never_considers(tp, needle):
    with pytest.raises(UsageError, match=needle):
        api.explain("llama-8b", "h100", tp=tp)


def test_explain_refuses_fp8_weights_on_a_gpu_without_fp8(tmp_path):
    """An AMD card without fp8 peaks (structural_reason's case), as a profile file."""
    hw = catalog.load_hardware("mi300x", "datasheet")
    hw.model_copy(update={"name": "Old-AMD", "aliases": [],
                          "peak_flops": {k: v for k, v in hw.peak_flops.items() if k != "fp8"}}
                  ).dump(tmp_path / "amd.yaml")
    with pytest.raises(UsageError, match="no fp8 support"):
        api.explain("llama-8b", "old-amd", weight_dtype="fp8", profile=str(tmp_path / "amd.yaml"))


def test_explain_refuses_a_profile_of_another_gpu(tmp_path):
    cpu = catalog.load_hardware("l4", "datasheet").model_copy(update={"name": "CPU", "aliases": []})
    cpu.dump(tmp_path / "cpu.yaml")
    with pytest.raises(UsageError, match="describes CPU, not h100"):
        api.explain("llama-1b", "h100", profile=str(tmp_path / "cpu.yaml"))
    assert api.explain("llama-1b", "cpu", profile=str(tmp_path / "cpu.yaml")).plan.hardware == "CPU"
    h100 = tmp_path / "h100.yaml"
    catalog.load_hardware("h100", "datasheet").dump(h100)
    assert api.explain("llama-1b", "H100 SXM", profile=str(h100)).plan.hardware == "H100-SXM"
    # Without --gpus, a profile file is the one GPU searched (not every catalog name, each given that file).
    assert [h.name for h in catalog.list_hardware(str(tmp_path / "cpu.yaml"))] == ["CPU"]


@pytest.mark.parametrize("call", [
    lambda: api.recommend("llama-8b", input_tokens=200000, trials=5),
    lambda: api.explain("llama-8b", "h100", input_tokens=200000),
    lambda: api.explain("llama-8b", "h100", input_tokens=131000, output_tokens=256),
])
def test_requests_longer_than_the_context_are_refused(call):
    with pytest.raises(UsageError, match="maximum context of 131,072 tokens"):
        call()


def test_goodput_without_a_rate_is_refused():
    with pytest.raises(UsageError, match="goodput.*--rate"):
        api.recommend("llama-8b", ["ttft=500ms"], gpus=["h100"], objective="goodput", trials=5)


@pytest.fixture
def hf_folder(tmp_path):
    folder = tmp_path / "hfm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
        "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 128256,
        "max_position_embeddings": 131072, "tie_word_embeddings": True,
        "_name_or_path": "someone/not-this-folder"}))
    return folder


def test_plan_of_a_local_model_folder_names_the_folder(hf_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rec = api.recommend("./hfm", gpus=["l4"], trials=20)
    plan = rec.best.plan
    assert plan.model == str(hf_folder.resolve())
    plan.dump(tmp_path / "plan.yaml")
    monkeypatch.chdir("/")
    saved = Plan.load(tmp_path / "plan.yaml")
    assert catalog.load_model(saved.model).num_layers == 16          # what bench and serve look up
    assert api.predict(saved, api.workload()).memory.fits
    assert vllm_command(plan, rec.model).startswith(f"vllm serve {hf_folder.resolve()} ")
    assert api.explain(str(hf_folder / "config.json"), "l4").plan.model == str(hf_folder.resolve())


def test_catalog_models_keep_their_names_and_hub_ids():
    rec = api.recommend("llama-8b", gpus=["h100"], trials=20)
    assert rec.best.plan.model == "Llama-3.1-8B"
    assert vllm_command(rec.best.plan, rec.model).startswith("vllm serve meta-llama/Llama-3.1-8B-Instruct ")


@pytest.mark.parametrize("args", [["explain", "--model", "llama-8b", "--gpu", "h100", "--tp", "3"],
                                  ["explain", "--model", "llama-8b", "--gpu", "h100", "--tp", "64"],
                                  ["recommend", "--model", "llama-8b", "--input", "200000"],
                                  ["recommend", "--model", "llama-8b", "--slo", "ttft=500ms", "--objective",
                                   "goodput"]])
def test_cli_refusals_are_one_line_exit_2(args):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "planner.cli", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
