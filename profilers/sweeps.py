"""What each microbenchmark measures, for a full GPU run, a quick GPU run and the tiny CPU run.
Shapes are real LLM layers so the fitted curves describe the GEMMs the planner actually prices."""
from __future__ import annotations

from dataclasses import dataclass, field

from planner.costmodel import PIECEWISE_TOKEN_SIZES

MB = 1 << 20
GB = 1 << 30


@dataclass(frozen=True)
class Layer:
    name: str
    n: int                  # output features
    k: int                  # input features


@dataclass(frozen=True)
class GemmPoint:
    m: int
    n: int
    k: int
    dtype: str              # "bf16" | "fp8" | "int8" (weight-only int8, bf16 compute)
    layer: str = ""


@dataclass(frozen=True)
class AttentionShape:
    heads: int
    kv_heads: int
    head_dim: int


# Llama-3.2-1B: layers of 4-32 M parameters, below the others (small weights stream far below copy bandwidth).
LLAMA_1B = [Layer("llama1b.qkv", 3072, 2048), Layer("llama1b.o", 2048, 2048),
            Layer("llama1b.gate_up", 16384, 2048), Layer("llama1b.down", 2048, 8192)]
LLAMA_8B = [Layer("llama8b.qkv", 6144, 4096), Layer("llama8b.o", 4096, 4096),
            Layer("llama8b.gate_up", 28672, 4096), Layer("llama8b.down", 4096, 14336)]
# Qwen2.5-14B (the accuracy grid's third model): its MLP is not a scaled Llama one (K = 13824 for down), and
# weight-streaming fp8 GEMMs at 2-16 rows vary by shape more than the weight-bytes curve alone shows.
QWEN_14B = [Layer("qwen14b.qkv", 7168, 5120), Layer("qwen14b.o", 5120, 5120),
            Layer("qwen14b.gate_up", 27648, 5120), Layer("qwen14b.down", 5120, 13824)]
# Llama-70B whole (TP 1, fp8 on one 141 GB card) and sharded by tensor parallelism: column-parallel layers
# split N, row-parallel split K.
LLAMA_70B = [Layer("llama70b.qkv", 10240, 8192), Layer("llama70b.o", 8192, 8192),
             Layer("llama70b.gate_up", 57344, 8192), Layer("llama70b.down", 8192, 28672)]
LLAMA_70B_TP4 = [Layer("llama70b.tp4.qkv", 2560, 8192), Layer("llama70b.tp4.o", 8192, 2048),
                 Layer("llama70b.tp4.gate_up", 14336, 8192), Layer("llama70b.tp4.down", 8192, 7168)]
LLAMA_70B_TP8 = [Layer("llama70b.tp8.qkv", 1280, 8192), Layer("llama70b.tp8.o", 8192, 1024),
                 Layer("llama70b.tp8.gate_up", 7168, 8192), Layer("llama70b.tp8.down", 8192, 3584)]

# Held-out points: shapes, token counts and copy sizes that are on none of the grids, for checking
# the cost model's interpolation (Qwen-32B-like 5120-wide layers, Qwen2.5-72B layers, odd M).
HOLDOUT_GEMM_GPU = [GemmPoint(16, 5120, 5120, "bf16", "holdout.5120sq"),
                    GemmPoint(96, 27648, 5120, "bf16", "holdout.qwen32b.gate_up"),
                    GemmPoint(1024, 8192, 29568, "bf16", "holdout.qwen72b.down"),
                    GemmPoint(4096, 5120, 13824, "bf16", "holdout.qwen32b.down"),
                    GemmPoint(2, 59136, 8192, "bf16", "holdout.qwen72b.gate_up"),
                    GemmPoint(256, 8192, 8192, "fp8", "holdout.llama70b.o"),
                    GemmPoint(3072, 14336, 4096, "fp8", "holdout.mistral7b.gate_up"),
                    GemmPoint(64, 5120, 5120, "int8", "holdout.5120sq")]
HOLDOUT_COPY_GPU = [3 * MB, 24 * MB, 200 * MB, 1536 * MB]


@dataclass(frozen=True)
class Sweep:
    copy_bytes: list[int]
    gemm_ms: list[int]
    gemm_layers: list[Layer]
    gemm_dtypes: list[str]
    prefill_seqs: list[int]
    decode_points: list[tuple[int, int]]            # (batch, context tokens)
    attention: AttentionShape
    collective_bytes: list[int]
    launch_kernels: int
    holdout_gemm: list[GemmPoint] = field(default_factory=list)
    holdout_copy: list[int] = field(default_factory=list)
    # more head sizes for the prefill sweep (same heads): flash attention's rate depends on it
    prefill_head_dims: tuple[int, ...] = ()

    def gemm_points(self) -> list[GemmPoint]:
        return [GemmPoint(m, layer.n, layer.k, dtype, layer.name)
                for dtype in self.gemm_dtypes for layer in self.gemm_layers for m in self.gemm_ms]


def _pow2(lo: int, hi: int, step: int = 2) -> list[int]:
    out, x = [], lo
    while x <= hi:
        out.append(x)
        x *= step
    return out


def _decode_grid(batches, contexts, max_tokens):
    # Cap batch x context so the KV cache of one set stays a few GB on an 80 GB card.
    return [(b, c) for b in batches for c in contexts if b * c <= max_tokens]


LLAMA_8B_ATTENTION = AttentionShape(heads=32, kv_heads=8, head_dim=128)

FULL = Sweep(
    copy_bytes=_pow2(1 * MB, 2 * GB),
    # The sizes a step's GEMMs commonly run at: decode rows, and every piecewise-graph token bucket from 512 on
    # (planner.costmodel.PIECEWISE_TOKEN_SIZES). Between 512 and 2048 alone, a Llama-3.1-8B step at the 768 bucket
    # was priced 14% fast on an H200: it took 21.0 ms, against 22.9 ms for 1024 tokens; mixed steps at the 640
    # bucket (512 prompt tokens + 16 decodes) ran 5-14% slower than priced from 512 and 768 (H200-grid14).
    gemm_ms=sorted({1, 8, 32, 128, 256, 4096, 8192, 16384} | {s for s in PIECEWISE_TOKEN_SIZES if s >= 512}),
    gemm_layers=LLAMA_1B + LLAMA_8B + QWEN_14B + LLAMA_70B + LLAMA_70B_TP4 + LLAMA_70B_TP8,
    gemm_dtypes=["bf16", "fp8", "int8"],
    prefill_seqs=[128, 256, 512, 1024, 2048, 4096, 8192, 16384],
    decode_points=_decode_grid([1, 8, 32, 128], [512, 2048, 8192, 32768], 1 << 20),
    attention=LLAMA_8B_ATTENTION,
    prefill_head_dims=(64,),
    collective_bytes=_pow2(4 << 10, 1 * GB),
    launch_kernels=1000,
    holdout_gemm=HOLDOUT_GEMM_GPU,
    holdout_copy=HOLDOUT_COPY_GPU,
)

QUICK = Sweep(
    copy_bytes=_pow2(1 * MB, 1 * GB, step=4),
    gemm_ms=[1, 32, 512, 8192],
    gemm_layers=LLAMA_8B,
    gemm_dtypes=["bf16", "fp8", "int8"],
    prefill_seqs=[1024, 4096],
    decode_points=[(1, 2048), (32, 2048), (8, 8192), (64, 8192)],
    attention=LLAMA_8B_ATTENTION,
    collective_bytes=_pow2(4 << 10, 1 * GB, step=4),
    launch_kernels=1000,
    holdout_gemm=HOLDOUT_GEMM_GPU[::2],
    holdout_copy=HOLDOUT_COPY_GPU[::2],
)

# Tiny sizes: the same code paths in seconds on a laptop core, for tests and CI.
CPU = Sweep(
    copy_bytes=_pow2(64 << 10, 4 * MB, step=4),
    gemm_ms=[1, 8, 32],
    gemm_layers=[Layer("tiny.a", 256, 256), Layer("tiny.b", 512, 256)],
    gemm_dtypes=["bf16", "fp8", "int8"],
    prefill_seqs=[64, 128],
    decode_points=[(1, 128), (4, 256)],
    attention=AttentionShape(heads=4, kv_heads=2, head_dim=32),
    collective_bytes=[4 << 10, 64 << 10],
    launch_kernels=100,
    holdout_gemm=[GemmPoint(4, 384, 256, "bf16", "holdout.tiny"),
                  GemmPoint(16, 256, 384, "int8", "holdout.tiny")],
    holdout_copy=[192 << 10, 3 * MB],
)


def sweep_for(device: str, quick: bool) -> Sweep:
    if device == "cpu":
        return CPU
    return QUICK if quick else FULL
