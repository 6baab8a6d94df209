"""Throwaway probe, kept with its result: can batch 256's decode attention (bound by KV bandwidth) run beside its
GEMMs (bound by compute) if the batch is cut in two halves whose layers run out of phase?

Llama-3.1-8B's layer at 1k context: per layer the linears (o, gate_up, SiLU, down, the next qkv) and the decode
attention, 8 layers of distinct weights and caches, each variant captured in one CUDA graph (µs per layer):
  serial_256     the batch as one: GEMMs(256), attention(256)
  serial_2x128   two halves one after the other: GEMMs(A), attention(A), GEMMs(B), attention(B)
  overlap_*      the halves on a GEMM stream and an attention stream: A's attention beside B's GEMMs, B's beside
                 A's next GEMMs; stream priorities none / GEMMs high / attention high

  PYTHONPATH=. python3 benchmarks/results/overlap_H200/overlap_exp.py OUT.json      # repository root, one GPU

Tidied after the run: its timing loops are now the repository's (quant._median_s, engine_probes._median_ms), which
time the same way (a warm-up call, then the median of the timed replays or calls; eager: three warm-up calls).
"""
import json
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, "benchmarks")
from engine_probes import _median_ms  # noqa: E402

from backends.engine import attention as A  # noqa: E402
from backends.engine.kernels import silu_and_mul  # noqa: E402
from backends.engine.quant import _median_s  # noqa: E402
from profilers.attention import _paged_set  # noqa: E402
from profilers.sweeps import AttentionShape  # noqa: E402

LAYERS, CONTEXT, HIDDEN, INTER = 8, 1024, 4096, 14336
SHAPE = AttentionShape(32, 8, 128)
dev = torch.device("cuda")


def weights():
    w = lambda n, k: torch.randn(n, k, dtype=torch.bfloat16, device=dev) * 0.02  # noqa: E731
    return [dict(qkv=w(6144, HIDDEN), o=w(HIDDEN, HIDDEN), gu=w(2 * INTER, HIDDEN), down=w(HIDDEN, INTER))
            for _ in range(LAYERS)]


class Half:
    """One micro-batch: its activations, and per layer a paged cache of `rows` sequences."""

    def __init__(self, rows):
        self.rows = rows
        self.x = torch.randn(rows, HIDDEN, dtype=torch.bfloat16, device=dev)
        self.attn_out = torch.empty(rows, 32, 128, dtype=torch.bfloat16, device=dev)
        self.sets = [_paged_set(torch, "cuda", rows, CONTEXT, SHAPE) for _ in range(LAYERS)]
        self.splits = A.decode_num_splits(rows, 8, dev)

    def gemms(self, W, layer):
        w = W[layer]
        o = F.linear(self.attn_out.view(self.rows, HIDDEN), w["o"])
        down = F.linear(silu_and_mul(F.linear(o, w["gu"])), w["down"])
        self.x = F.linear(down, W[(layer + 1) % LAYERS]["qkv"])[:, :HIDDEN]

    def attend(self, layer):
        q, kc, vc, bt, cl = self.sets[layer]
        A.decode_attention_triton(q, kc, vc, bt, cl, 0.088, self.splits, out=self.attn_out)


def serial(W, halves):
    for layer in range(LAYERS):
        for h in halves:
            h.gemms(W, layer)
            h.attend(layer)


def overlap(W, halves, s_gemm, s_attn):
    """GEMMs of every half in order on s_gemm, attentions on s_attn; each waits for its own half's previous op."""
    cur = torch.cuda.current_stream()
    s_gemm.wait_stream(cur)
    s_attn.wait_stream(cur)
    for layer in range(LAYERS):
        for h in halves:
            with torch.cuda.stream(s_gemm):
                if layer:
                    s_gemm.wait_event(h.attended)
                h.gemms(W, layer)
                h.projected = torch.cuda.Event()
                h.projected.record(s_gemm)
            with torch.cuda.stream(s_attn):
                s_attn.wait_event(h.projected)
                h.attend(layer)
                h.attended = torch.cuda.Event()
                h.attended.record(s_attn)
    cur.wait_stream(s_gemm)
    cur.wait_stream(s_attn)


def time_graph(fn, reps=30):
    """µs per layer of `fn` captured once in a CUDA graph: the median of `reps` replays."""
    return _median_s(fn, reps=reps, calls=1) * 1e6 / LAYERS


def time_eager(fn, reps=30):
    return _median_ms(fn, reps) * 1e3 / LAYERS


def main(out_path):
    W = weights()
    whole, halves = [Half(256)], [Half(128), Half(128)]
    quarters = [Half(64) for _ in range(4)]
    lo, hi = torch.cuda.Stream.priority_range() if hasattr(torch.cuda.Stream, "priority_range") else (0, -1)
    rows = {}
    rows["gemms_256_alone"] = time_graph(lambda: [whole[0].gemms(W, i) for i in range(LAYERS)])
    rows["attn_256_alone"] = time_graph(lambda: [whole[0].attend(i) for i in range(LAYERS)])
    rows["gemms_128_alone"] = time_graph(lambda: [halves[0].gemms(W, i) for i in range(LAYERS)])
    rows["attn_128_alone"] = time_graph(lambda: [halves[0].attend(i) for i in range(LAYERS)])
    rows["serial_256"] = time_graph(lambda: serial(W, whole))
    rows["serial_2x128"] = time_graph(lambda: serial(W, halves))
    for name, (pg, pa) in {"none": (0, 0), "gemm_high": (-1, 0), "attn_high": (0, -1)}.items():
        s_gemm, s_attn = torch.cuda.Stream(priority=pg), torch.cuda.Stream(priority=pa)
        rows[f"overlap_2x128_{name}"] = time_graph(lambda: overlap(W, halves, s_gemm, s_attn))
        rows[f"overlap_2x128_{name}_eager"] = time_eager(lambda: overlap(W, halves, s_gemm, s_attn))
        rows[f"overlap_4x64_{name}"] = time_graph(lambda: overlap(W, quarters, s_gemm, s_attn))
    for k, v in rows.items():
        print(f"{k:32s} {v:8.1f} us/layer", flush=True)
    result = {"device": torch.cuda.get_device_name(), "uuid": str(torch.cuda.get_device_properties(0).uuid),
              "torch": torch.__version__, "priority_range": [lo, hi], "us_per_layer": rows}
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
