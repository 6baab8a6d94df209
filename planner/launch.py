"""The command lines that deploy a plan: `vllm serve` flags (per vLLM 0.33's names) and the built-in engine."""
from __future__ import annotations

import shlex

from planner.schemas import ModelSpec, Plan


def vllm_args(plan: Plan, max_model_len: int | None = None) -> list[str]:
    """`vllm serve` flags for a plan (without the model argument)."""
    args = ["--tensor-parallel-size", str(plan.tp)]
    if plan.pp > 1:
        args += ["--pipeline-parallel-size", str(plan.pp)]
    if plan.weight_dtype == "fp8":
        args += ["--quantization", "fp8"]               # online dynamic fp8 from a bf16 checkpoint
    if plan.kv_dtype == "fp8":
        args += ["--kv-cache-dtype", "fp8"]
    args += ["--max-num-seqs", str(plan.max_num_seqs),
             "--max-num-batched-tokens", str(plan.max_num_batched_tokens),
             "--gpu-memory-utilization", f"{plan.gpu_memory_utilization:g}",
             "--block-size", str(plan.block_size)]
    if max_model_len or plan.max_model_len:
        args += ["--max-model-len", str(max_model_len or plan.max_model_len)]
    return args


def vllm_command(plan: Plan, model: ModelSpec, max_model_len: int | None = None) -> str:
    """The shell command that deploys one replica of the plan with vLLM, with notes where vLLM differs."""
    cmd = shlex.join(["vllm", "serve", model.hf_id or model.name, *vllm_args(plan, max_model_len)])
    notes = []
    if plan.weight_dtype in ("int8", "int4"):
        notes.append(f"# vLLM has no online {plan.weight_dtype} weight-only mode: serve a pre-quantized "
                     f"{plan.weight_dtype} checkpoint (e.g. GPTQ/AWQ) of this model")
    if plan.replicas > 1:
        notes.append(f"# run {plan.replicas} replicas (one per {plan.gpus_per_replica} GPU(s)) behind a "
                     f"load balancer, or add --data-parallel-size {plan.replicas} on one node")
    return "\n".join([cmd, *notes])


def builtin_command(plan_path: str) -> str:
    """The built-in engine serving a saved plan."""
    return shlex.join(["plan", "serve", "--plan", plan_path])
