"""Pydantic models for everything that crosses an edge: files, CLI, HTTP.

The cost model itself works on these objects read-only; it never does I/O.
Units are in the field names (`_bytes`, `_s`, `_ms`, `_flops`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

WeightDtype = Literal["bf16", "fp16", "fp8", "int8", "int4"]
KVDtype = Literal["bf16", "fp16", "fp8", "int8"]
ComputeDtype = Literal["bf16", "fp16", "fp8", "int8", "fp32"]


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    @classmethod
    def load(cls, path: str | Path):
        """Read YAML or JSON (by suffix; YAML is a superset, so anything else is parsed as YAML)."""
        text = Path(path).read_text()
        data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
        return cls.model_validate(data)

    def dump(self, path: str | Path) -> None:
        data = self.model_dump(mode="json", exclude_none=True)
        text = json.dumps(data, indent=2) if str(path).endswith(".json") else yaml.safe_dump(data, sort_keys=False)
        Path(path).write_text(text)


# --------------------------------------------------------------------------- model architecture
class ModelSpec(_Base):
    """A decoder-only transformer, with the numbers of its public Hugging Face config.json."""

    name: str                                   # canonical catalog name, e.g. "Llama-3.1-70B"
    hf_id: Optional[str] = None                 # e.g. "meta-llama/Llama-3.1-70B-Instruct"
    aliases: list[str] = []                     # short names accepted on the CLI
    architecture: str = "llama"                 # llama | mistral | qwen2 | qwen3 | mixtral | qwen3_moe | deepseek_v3 | gemma2
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: Optional[int] = None              # defaults to hidden_size // num_attention_heads
    intermediate_size: int = Field(gt=0)        # dense MLP width
    vocab_size: int = Field(gt=0)
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rope_scaling: Optional[dict] = None
    rms_norm_eps: float = 1e-5
    attention_bias: bool = False                # bias on q/k/v projections (Qwen2)
    qk_norm: bool = False                       # RMSNorm on q and k per head (Qwen3)
    sliding_window: Optional[int] = None        # Gemma-2: every other layer attends this far back
    post_norms: bool = False                    # Gemma-2: extra norms after attention and MLP
    # Mixture of experts
    num_experts: int = 0
    num_experts_per_tok: int = 0
    moe_intermediate_size: Optional[int] = None
    num_shared_experts: int = 0
    shared_expert_intermediate_size: Optional[int] = None
    first_k_dense_layers: int = 0               # DeepSeek-V3: the first k layers use the dense MLP
    # Multi-head latent attention (DeepSeek-V3)
    q_lora_rank: Optional[int] = None
    kv_lora_rank: Optional[int] = None
    qk_nope_head_dim: Optional[int] = None
    qk_rope_head_dim: Optional[int] = None
    v_head_dim: Optional[int] = None
    # Provenance
    published_params: Optional[float] = None    # total parameters as published (model card), for the 1% check
    source: Optional[str] = None
    # A model read from a local file or folder (planner.catalog sets it, absolute): plans name the model by it,
    # so serving and benchmarking a saved plan load the same model; None for catalog models.
    path: Optional[str] = None

    @model_validator(mode="after")
    def _check(self):
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError("num_attention_heads must be a multiple of num_kv_heads")
        if self.num_experts and not (0 < self.num_experts_per_tok <= self.num_experts):
            raise ValueError("num_experts_per_tok must be in 1..num_experts")
        return self

    @property
    def ref(self) -> str:
        """How a plan names this model: its local path, else its catalog name."""
        return self.path or self.name

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank is not None


# --------------------------------------------------------------------------- hardware
class Sourced(_Base):
    value: float
    source: str
    date: str


class Interconnect(_Base):
    kind: str                                   # "NVLink4", "PCIe4", "Infinity Fabric"...
    bandwidth_bytes_per_s: float = Field(gt=0)  # per direction, per GPU
    gpus_per_node: int = 8
    source: Optional[str] = None


class CurvePoint(_Base):
    x: float
    y: float


class Efficiency(_Base):
    """Achieved fraction of datasheet peaks. Scalars are defaults; curves, when present, are
    measured and interpolated (log-x, linear-y) by the cost model."""

    gemm: dict[str, float] = {"bf16": 0.80, "fp16": 0.80, "fp8": 0.72, "int8": 0.60, "fp32": 0.80}
    # GEMM efficiency as a function of the token dimension M, per compute dtype (measured).
    gemm_by_m: dict[str, list[CurvePoint]] = {}
    # Fitted GEMM model (measured; the cost model falls back to gemm_by_m / memory_by_bytes without them).
    # Compute-bound efficiency by M, per compute dtype: median over the shapes that are compute bound at
    # that M (the best achieved where none is), so it is not dragged down by weight-streaming shapes.
    gemm_compute_by_m: dict[str, list[CurvePoint]] = {}
    # Memory-bound GEMMs (small M): fraction of bandwidth by the weight bytes of the GEMM, per stored
    # weight dtype (bf16, fp8): big weight matrices stream near peak, small ones are latency bound.
    gemm_memory_by_bytes: dict[str, list[CurvePoint]] = {}
    # Softness of a GEMM's roofline corner (planner.costmodel.roofline_s): 0 is max(compute, memory); fitted by
    # `plan calibrate`, since the profiler's curves are each measured away from the corner.
    gemm_knee: float = 0.0
    # Weight-only int8/int4: the dequantize pass (read quantized weights, write bf16) as a fraction of
    # bandwidth; 0.25 is what torch's cast reached on H100/H200.
    dequant_memory: float = 0.25
    # The built-in engine's weight-only fp8 GEMVs (decode): fraction of bandwidth streaming fp8 weights, for one
    # row (a CUDA-core kernel; the H200 tile sweep measured 0.36-0.67 by layer shape) and for 2-16 rows (a
    # tensor-core kernel, rows padded to 16). 0.5 unless calibrated.
    fp8_gemv_memory: float = 0.5
    fp8_gemv_rows_memory: float = 0.5
    # ... and the fixed time of one such GEMV beyond its stream (ramp-up and tail): on an H200 the one-row kernel
    # took ~6 us plus 1/3.3 TB/s per byte over Llama-3.1-8B's layers, so small layers stream far below the rate
    # big ones reach. 0 unless calibrated.
    fp8_gemv_latency_s: float = 0.0
    # ... and the one-row GEMV as measured, layer shape by layer shape: fraction of bandwidth by the bytes it moves
    # (latency included). Preferred over latency + fraction where present: on an H200 the line through the shapes
    # was 13-20% slow for Llama-70B's 235-470 MB layers (0.88-0.91 of bandwidth) and 7% fast for Qwen2.5-14B's
    # down projection (0.61).
    fp8_gemv_by_bytes: list[CurvePoint] = []
    memory: float = 0.85                        # large streams
    # memory-bandwidth efficiency as a function of bytes moved by one kernel (measured)
    memory_by_bytes: list[CurvePoint] = []
    attention_compute: float = 0.55             # flash-attention prefill, fraction of bf16 peak
    # ... by sequence length (measured; x = tokens of a causal prefill), per head size, preferred over the scalar
    attention_compute_by_len: dict[str, list[CurvePoint]] = {}
    attention_memory: float = 0.80              # decode attention, fraction of bandwidth
    # ... relative to that, by head size (measured: the decode kernel streams narrower K/V rows less well)
    attention_memory_by_head_dim: dict[str, float] = {}
    # ... plus a fixed time per decode-attention call (its split partials' merge, the first tiles' latency)
    attention_decode_latency_s: float = 0.0
    kernel_overhead_s: float = 4e-6             # per kernel launch, eager, not hidden under CUDA graphs
    graph_kernel_overhead_s: float = 1.5e-6     # per kernel under CUDA graph replay
    step_overhead_s: float = 2.0e-4             # scheduler + sampling + host work per engine step
    # Host work per sequence in a step (block tables, positions, sampling, detokenize): 0 unless calibrated.
    per_seq_overhead_s: float = 0.0
    # ... and more of it under an HTTP server streaming every token (its event loop shares the interpreter with
    # the engine loop): 0 unless calibrated from a served run's step trace.
    served_per_seq_overhead_s: float = 0.0
    # The share of that host work async scheduling hides behind the GPU's (the rest is presumably on the GPU's own
    # stream: input copies, sampling): served async steps on an H200 took as long as synchronous ones.
    async_hidden_fraction: float = 0.0
    allreduce_alpha_s: float = 20e-6            # latency of one all-reduce
    allreduce_busbw_fraction: float = 0.75      # bus bandwidth / per-direction link bandwidth
    # measured all-reduce curves: number of GPUs -> [(message bytes, seconds)]
    allreduce_by_bytes: dict[str, list[CurvePoint]] = {}
    runtime_overhead_bytes: float = 2.5e9       # CUDA context, NCCL buffers, CUDA graphs, allocator slack


class Provenance(_Base):
    kind: Literal["datasheet", "measured", "calibrated"] = "datasheet"
    gpu: Optional[str] = None
    driver: Optional[str] = None
    torch: Optional[str] = None
    date: Optional[str] = None
    command: Optional[str] = None
    duration_s: Optional[float] = None
    data_files: Optional[list[str]] = None      # calibrated profiles: the measured runs they were fitted to


class HardwareProfile(_Base):
    name: str                                   # canonical, e.g. "H100-SXM"
    aliases: list[str] = []
    vendor: Literal["nvidia", "amd", "intel", "other"] = "nvidia"
    # What an engine can allocate: the binary capacity (an "80 GB" card holds 80 GiB = 85.9e9 bytes), less the 1/16
    # that ECC keeps on GDDR cards; measured profiles hold the driver's own total.
    memory_bytes: float = Field(gt=0)
    memory_bandwidth_bytes_per_s: float = Field(gt=0)
    peak_flops: dict[str, float]                # dense FLOP/s per compute dtype: bf16, fp16, fp8, int8, fp32
    interconnect: Interconnect
    tdp_w: float = Field(gt=0)
    price_per_gpu_hour: float = Field(ge=0)
    sources: dict[str, Sourced] = {}            # field -> where the figure comes from
    efficiency: Efficiency = Efficiency()
    provenance: Provenance = Provenance()
    # Measured tables (profilers); free-form beyond the Efficiency curves above.
    measured: Optional[dict] = None

    @model_validator(mode="after")
    def _check(self):
        if "bf16" not in self.peak_flops:
            raise ValueError("peak_flops must give at least bf16")
        return self

    def peak(self, dtype: str) -> float:
        """Peak FLOP/s for a compute dtype; a dtype the chip lacks falls back to bf16 (emulated)."""
        return self.peak_flops.get(dtype) or self.peak_flops["bf16"]


# --------------------------------------------------------------------------- workload and SLOs
class LengthDist(_Base):
    kind: Literal["fixed", "uniform", "normal", "lognormal"] = "fixed"
    mean: float = Field(gt=0)
    std: float = Field(default=0.0, ge=0)       # normal, lognormal
    min: Optional[float] = None                 # uniform (and clip for the others)
    max: Optional[float] = None


class Workload(_Base):
    input_tokens: LengthDist = LengthDist(mean=1024)
    output_tokens: LengthDist = LengthDist(mean=256)
    rate_rps: Optional[float] = Field(default=None, gt=0)   # requests/s to sustain (all replicas)
    concurrency: Optional[int] = Field(default=None, gt=0)
    arrival: Literal["constant", "poisson", "gamma"] = "poisson"
    burstiness: float = Field(default=1.0, gt=0)            # gamma shape; 1 = Poisson


SLOMetric = Literal["ttft", "tpot", "itl", "e2e"]


class SLO(_Base):
    metric: SLOMetric
    limit_s: float = Field(gt=0)
    percentile: Optional[float] = Field(default=None, gt=0, le=100)   # None = mean

    @property
    def label(self) -> str:
        p = f"_p{self.percentile:g}" if self.percentile else ""
        return f"{self.metric}{p}<={self.limit_s * 1e3:g}ms"


# --------------------------------------------------------------------------- plan and prediction
class Plan(_Base):
    model: str
    hardware: str
    num_gpus: int = Field(default=1, gt=0)
    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    replicas: int = Field(default=1, gt=0)
    weight_dtype: WeightDtype = "bf16"
    kv_dtype: KVDtype = "bf16"
    max_num_seqs: int = Field(default=256, gt=0)
    max_num_batched_tokens: int = Field(default=8192, gt=0)
    gpu_memory_utilization: float = Field(default=0.90, gt=0, le=1)
    block_size: int = Field(default=16, gt=0)
    max_model_len: Optional[int] = None

    @model_validator(mode="before")
    @classmethod
    def _obsolete_keys(cls, data):
        # Plans once carried chunked_prefill, and the search tried it off; every backend chunks prefill (vLLM V1
        # always, the built-in engine too), so the key of an older plan file is accepted and ignored.
        if isinstance(data, dict) and "chunked_prefill" in data:
            data = {k: v for k, v in data.items() if k != "chunked_prefill"}
        return data

    @model_validator(mode="after")
    def _check(self):
        if self.num_gpus != self.tp * self.pp * self.replicas:
            raise ValueError(f"num_gpus ({self.num_gpus}) must equal tp*pp*replicas "
                             f"({self.tp}*{self.pp}*{self.replicas})")
        return self

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp


class MemoryBreakdown(_Base):
    """Per GPU, bytes."""
    capacity_bytes: float
    usable_bytes: float                         # capacity x gpu_memory_utilization
    weights_bytes: float
    activation_bytes: float
    runtime_overhead_bytes: float
    kv_cache_bytes: float                       # what is left for the KV cache (may be negative)
    kv_bytes_per_token: float                   # per GPU
    kv_capacity_tokens: int
    max_concurrent_seqs: int                    # for the workload's mean context
    fits: bool
    shortfall_bytes: float = 0.0                # how much is missing when it does not fit


class Prediction(_Base):
    ttft_s: float
    tpot_s: float
    e2e_s: float
    throughput_tok_s: float                     # output tokens/s, whole deployment
    tokens_per_s_per_gpu: float
    requests_per_s: float                       # sustainable, whole deployment
    cost_per_million_tokens: float              # output tokens, $ / 1M
    cost_per_hour: float
    batch_size: float                           # operating concurrency per replica
    bottleneck: str                             # "memory-bandwidth", "compute", "communication", "overhead"
    memory: MemoryBreakdown
    profile_kind: str = "datasheet"             # which hardware profile the numbers came from
    percentiles: Optional[dict[str, float]] = None   # from the simulator, e.g. {"ttft_p90_s": ...}
    interval: Optional[dict[str, list[float]]] = None  # metric -> [low, high]
    interval_basis: Optional[str] = None        # where the interval comes from (planner.uncertainty)
    simulation: Optional[dict] = None           # summary of the simulated run behind `percentiles`
