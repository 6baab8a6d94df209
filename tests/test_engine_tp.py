"""Tensor parallelism on CPU (gloo, real worker processes): same greedy tokens as one process; a dead rank,
Ctrl-C or a killed server leaves no process behind."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from backends.engine.config import EngineConfig, SamplingParams, resolve_model
from backends.engine.engine import LLMEngine

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=256,
             max_position_embeddings=512)
CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(**SMALL, num_key_value_heads=2),                # KV heads split
    "mixtral": lambda: transformers.MixtralConfig(**SMALL, num_key_value_heads=1, num_local_experts=4,
                                                  num_experts_per_tok=2),                     # KV head replicated
}
CLASSES = {"llama": "LlamaForCausalLM", "mixtral": "MixtralForCausalLM"}


def save_checkpoint(kind: str, folder) -> None:
    torch.manual_seed(0)
    model = getattr(transformers, CLASSES[kind])(CONFIGS[kind]())
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.25) if "norm" not in name else p.uniform_(0.5, 1.5)
    model.save_pretrained(folder)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_tp2_greedy_tokens_match_tp1(kind, tmp_path):
    save_checkpoint(kind, tmp_path)
    spec, folder, _ = resolve_model(str(tmp_path))
    prompts = [list(range(1, 20)), [5, 6, 7], list(range(100, 140))]
    outs = {}
    for tp in (1, 2):
        engine = LLMEngine(EngineConfig(model=spec, model_path=folder, load_format="safetensors", device="cpu",
                                        dtype="fp32", tp=tp, num_kv_blocks=64, max_model_len=256))
        try:
            outs[tp] = engine.generate(prompts, SamplingParams(max_tokens=12, ignore_eos=True))
        finally:
            engine.close()
    assert outs[1] == outs[2]


@pytest.fixture
def start_server():
    """Starts `plan serve --tp 2` on CPU; returns (process, worker pids, stderr lines so far). stderr is drained
    by a thread for the rest of the run (both ranks write to the pipe: a full pipe would block them at exit),
    and a server a test leaves running is killed."""
    procs = []

    def start(*args):
        proc = subprocess.Popen([sys.executable, "-m", "backends.engine.server", "--model", "tiny", "--device",
                                 "cpu", "--tp", "2", "--port", "0", *args], stderr=subprocess.PIPE, text=True,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        procs.append(proc)
        lines, pids = [], None
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("{"):
                event = json.loads(line)
                pids = event.get("pids", pids)
                if event.get("event") == "listening":
                    proc.stderr_reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
                    proc.stderr_reader.start()
                    return proc, pids, lines
        raise AssertionError(f"server did not start (rc {proc.wait()})")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":     # dead, waiting to be reaped
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_a_dead_rank_stops_the_server_with_one_line(start_server):
    proc, (worker,), lines = start_server()
    os.kill(worker, signal.SIGKILL)
    rc = proc.wait(timeout=20)
    proc.stderr_reader.join(timeout=10)      # to the end of the pipe
    assert rc != 0
    assert "error: tensor-parallel rank 1 exited" in "".join(lines)


def test_ctrl_c_stops_every_rank(start_server):
    proc, (worker,), _ = start_server()
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    assert gone(worker)


def test_a_killed_server_leaves_no_orphan(start_server):
    proc, (worker,), _ = start_server()
    proc.kill()
    proc.wait(timeout=10)
    assert gone(worker)
