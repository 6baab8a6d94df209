"""The command lines that deploy a plan: `vllm serve` flags (vLLM 0.33's names, see the reference notes)
and the built-in engine. The benchmark harness starts vLLM with these same flags."""
from __future__ import annotations

import shlex
from pathlib import Path

from planner.schemas import ModelSpec, Plan

_DTYPE = {"bf16": "bfloat16", "fp16": "float16"}


def vllm_args(plan: Plan, *, load_format: str | None = None) -> tuple[list[str], list[str]]:
    """`vllm serve` flags for a plan (without the model argument), and notes on what vLLM cannot express."""
    args = ["--tensor-parallel-size", str(plan.tp), "--pipeline-parallel-size", str(plan.pp)]
    notes = []
    if plan.replicas > 1:
        args += ["--data-parallel-size", str(plan.replicas)]
    if plan.weight_dtype == "fp8":
        args += ["--quantization", "fp8"]      # online dynamic fp8 on an unquantized checkpoint
    elif plan.weight_dtype in _DTYPE:
        args += ["--dtype", _DTYPE[plan.weight_dtype]]
    else:
        notes.append(f"weight_dtype {plan.weight_dtype}: vLLM has no online {plan.weight_dtype} weight-only "
                     "mode; serve a pre-quantized checkpoint (GPTQ/AWQ; its config sets the quantization)")
    if plan.kv_dtype == "fp8":
        args += ["--kv-cache-dtype", "fp8"]
    elif plan.kv_dtype == "int8":
        notes.append("kv_dtype int8: vLLM has no int8 KV cache; it runs with the model dtype (auto)")
    args += ["--max-num-seqs", str(plan.max_num_seqs),
             "--max-num-batched-tokens", str(plan.max_num_batched_tokens),
             "--gpu-memory-utilization", f"{plan.gpu_memory_utilization:g}",
             "--block-size", str(plan.block_size)]
    if plan.max_model_len:
        args += ["--max-model-len", str(plan.max_model_len)]
    if load_format:
        args += ["--load-format", load_format]
    return args, notes


def vllm_model(model: ModelSpec) -> str:
    """What `vllm serve` loads: a local model folder itself (its config's _name_or_path may name a hub repository
    the user did not mean, or none), else the Hugging Face id."""
    if model.path and Path(model.path).is_dir():
        return model.path
    return model.hf_id or model.name


def vllm_command(plan: Plan, model: ModelSpec) -> str:
    """The shell command that deploys the plan with vLLM, its notes as trailing comments."""
    args, notes = vllm_args(plan)
    return "\n".join([shlex.join(["vllm", "serve", vllm_model(model), *args]),
                      *(f"# {n}" for n in notes)])


def builtin_command(plan_path: str) -> str:
    """The built-in engine serving a saved plan."""
    return shlex.join(["plan", "serve", "--plan", plan_path])
