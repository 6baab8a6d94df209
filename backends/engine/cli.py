"""`plan serve`: start the built-in engine's OpenAI-compatible server from a plan file or flags.

torch is imported only inside the command, so registering it costs the planner CLI nothing.
"""
from __future__ import annotations

import asyncio
import dataclasses
import sys

import typer

from planner.errors import NoDeviceError, PlanError, UsageError, parser_errors, show_parser_error, validation_problem

from .config import EngineConfig, EngineError, check_device, resolve_model

SERVE_HELP = ("Serve a model with the built-in engine (OpenAI-compatible /v1/completions, /metrics).\n\n"
              "Examples:\n\n"
              "* `plan serve --plan plan.yaml`\n\n"
              "* `plan serve --model llama-8b --load-format dummy --max-num-seqs 128 --trace steps.jsonl`\n\n"
              "* `plan serve --model tiny --device cpu --port 8000`")


def engine_config_from_args(plan: str | None, model: str | None, **flags) -> EngineConfig:
    """Plan values first, then any flag given explicitly; raises UsageError with a one-line reason."""
    from pydantic import ValidationError

    values: dict = {}
    if plan:
        from planner.parse import load_plan
        p = load_plan(plan)
        if p.pp > 1:
            raise UsageError(f"plan {plan}: pp={p.pp}: pipeline parallelism is not supported by the built-in engine")
        if p.weight_dtype not in ("bf16", "fp16", "fp8", "int8") or p.kv_dtype not in ("bf16", "fp16", "fp8"):
            raise UsageError(f"plan {plan}: weights {p.weight_dtype}, KV {p.kv_dtype}: not supported by the "
                             "built-in engine (weights bf16/fp16/fp8/int8, KV bf16/fp16/fp8)")
        model = model or p.model
        quantized = p.weight_dtype in ("fp8", "int8")
        values = {"dtype": "bf16" if quantized else p.weight_dtype, "weight_dtype": p.weight_dtype,
                  "kv_dtype": p.kv_dtype, "tp": p.tp, "max_num_seqs": p.max_num_seqs,
                  "max_num_batched_tokens": p.max_num_batched_tokens, "block_size": p.block_size,
                  "gpu_memory_utilization": p.gpu_memory_utilization, "max_model_len": p.max_model_len}
    if not model:
        raise UsageError("give --model NAME_OR_PATH or --plan plan.yaml")
    values.update({k: v for k, v in flags.items() if v is not None})
    try:
        spec, folder, eos = resolve_model(model)
        return EngineConfig(model=spec, model_path=folder, eos_token_ids=eos, **values)
    except (EngineError, KeyError, LookupError) as e:
        raise UsageError(str(e).strip("'\""))
    except ValidationError as e:   # a config.json whose numbers a ModelSpec refuses
        raise UsageError(f"model {model}: {validation_problem(e)}")
    except ValueError as e:   # the catalog's unknown-name errors
        raise UsageError(str(e).splitlines()[0])


def cuda_or_cpu(device: str) -> str:
    """The device to run on: auto picks cuda when torch sees a GPU; cuda without one is the no-device error
    (exit 3) that `plan profile` gives, not torch's assertion."""
    try:
        check_device(device)
    except EngineError as e:
        raise UsageError(str(e)) from None
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise NoDeviceError(f"--device {device}: PyTorch sees no CUDA device (torch {torch.__version__}, {build}); "
                            "use --device cpu")
    return device


def serve(
    plan: str | None = typer.Option(None, "--plan", help="A plan file (YAML/JSON) from `plan recommend --out`."),
    model: str | None = typer.Option(None, "--model", "-m", help="Catalog name/alias, `tiny`, or a local "
                                        "folder with config.json (and safetensors, tokenizer.json)."),
    dtype: str | None = typer.Option(None, "--dtype", help="bf16 | fp16 | fp32 (default: bf16 on CUDA, "
                                        "fp32 on CPU)."),
    weight_dtype: str | None = typer.Option(None, "--weight-dtype", help="bf16 | fp8 | int8: fp8 (e4m3, "
                                               "per-channel, fp8 GEMMs) or int8 (weight-only) quantize at load."),
    kv_dtype: str | None = typer.Option(None, "--kv-dtype", help="KV cache: bf16 | fp16 | fp8 (default: dtype)."),
    tp: int | None = typer.Option(None, "--tp", help="Tensor-parallel GPUs (one process each, started here)."),
    max_num_seqs: int | None = typer.Option(None, "--max-num-seqs", help="Most sequences in a batch."),
    max_num_batched_tokens: int | None = typer.Option(None, "--max-num-batched-tokens",
                                                         help="Token budget of one step (chunked prefill)."),
    gpu_memory_utilization: float | None = typer.Option(None, "--gpu-memory-utilization",
                                                           help="Fraction of GPU memory for weights+activations+KV."),
    num_kv_blocks: int | None = typer.Option(None, "--num-kv-blocks", help="KV cache size in blocks "
                                                "(overrides the memory-based size; CPU default 512)."),
    block_size: int | None = typer.Option(None, "--block-size", help="Tokens per KV block (16)."),
    max_model_len: int | None = typer.Option(None, "--max-model-len", help="Longest prompt+output."),
    load_format: str | None = typer.Option(None, "--load-format", help="dummy (seeded random weights) | "
                                              "safetensors (from the model folder)."),
    device: str = typer.Option("auto", "--device", help="auto (cuda when there is a GPU) | cuda | cpu"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8000, "--port", help="Port (0: any free port; the bound one is logged)."),
    trace: str | None = typer.Option(None, "--trace", help="Write one JSON line per engine step here."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the dummy weights."),
    no_cuda_graphs: bool = typer.Option(False, "--no-cuda-graphs", help="Eager decode steps."),
    async_scheduling: bool = typer.Option(False, "--async-scheduling",
                                          help="Launch each step before reading the last one's tokens (host work "
                                               "overlaps the GPU's; one GPU only)."),
    served_model_name: str | None = typer.Option(None, "--served-model-name",
                                                    help="Model name in the API (default: the model's)."),
) -> None:
    config = engine_config_from_args(
        plan, model, dtype=dtype, weight_dtype=weight_dtype, kv_dtype=kv_dtype, tp=tp, max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        gpu_memory_utilization=gpu_memory_utilization, num_kv_blocks=num_kv_blocks, block_size=block_size,
        max_model_len=max_model_len, load_format=load_format, trace_path=trace, seed=seed,
        cuda_graphs=False if no_cuda_graphs else None, async_scheduling=async_scheduling or None)
    config = dataclasses.replace(config, device=cuda_or_cpu(device))   # after the plan's checks: no torch there
    from .engine import LLMEngine  # torch from here on
    from .gc_clock import freeze_startup
    from .server import load_tokenizer
    from .server import serve as run_server
    try:
        engine = LLMEngine(config)
    except EngineError as e:
        raise UsageError(str(e))
    freeze_startup()
    name = served_model_name or (model if model and config.model_path is None else config.model.name)
    try:
        asyncio.run(run_server(engine, host, port, name, load_tokenizer(config.model_path)))
    except KeyboardInterrupt:
        pass
    finally:
        engine.close()


def register(app: typer.Typer) -> None:
    app.command("serve", help=SERVE_HELP)(serve)


def main() -> None:
    """`python -m backends.engine.server ...`: the same flags, one-line errors."""
    app = typer.Typer(add_completion=False)
    register(app)
    try:
        app(standalone_mode=False)
    except PlanError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except parser_errors() as e:
        sys.exit(show_parser_error(e))
