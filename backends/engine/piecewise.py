"""Piecewise CUDA graphs for steps with prefill tokens (prefill chunks, mixed prefill + decode).

Their attention has shapes that change every step (sequences, lengths, cached prefixes), so it runs eagerly;
everything between two attentions (o_proj, norms, MLP, the next layer's qkv, RoPE and KV store) is one graph
per layer, captured at bucketed token counts. A step of T tokens runs at the next bucket: num_layers + 1 graph
replays and the eager attention between them, instead of ~12 host launches per layer. On a slow host that is
what bounds a short prefill (Llama-3.1-8B, 128 tokens, H200: 21.7 ms of host launches for 10.6 ms of GPU work).

The pieces talk through static buffers allocated outside the graphs (ids, positions, slots in; qkv, residual,
attention output, hidden states between pieces), so the graphs' own intermediates can share one memory pool:
pieces always replay in order on one stream.

A step of fresh prompts only (no cached prefix, no decodes, at most WHOLE_GRAPH_PREFILLS of them) replays one graph
for the whole forward instead, flash attention included: its varlen call is captured with the bucket as both
maxima and a static table of prefix sums, padded by one sequence over the bucket's padding rows and then by
empty ones. The host then issues one replay instead of two calls a layer (Llama-3.2-1B, lone 128-token prefill,
H200: 1.79 -> 1.57 ms a step; benchmarks/bench_prefill_graphs.py).
"""
from __future__ import annotations

import torch

from planner.costmodel import WHOLE_GRAPH_PREFILLS, PIECEWISE_TOKEN_SIZES

from .attention import AttentionMetadata
from .kernels import feed_ids


def piecewise_sizes(max_tokens: int) -> tuple[int, ...]:
    """The buckets an engine with a `max_tokens` step budget captures. The token buckets live with the cost model
    that prices steps at them: padding costs at most ~25% above 256 tokens; above the largest bucket a step is GPU
    bound for the models this engine runs (8B: an eager 2k-token step is ~50 ms of GPU work against ~20 ms of
    launches), so it runs eagerly."""
    sizes = [s for s in PIECEWISE_TOKEN_SIZES if s < max_tokens]
    return tuple(sizes + [s for s in PIECEWISE_TOKEN_SIZES if s >= max_tokens][:1])


class PiecewiseGraphs:
    def __init__(self, model, sizes: tuple[int, ...], trash_slot: int, device: torch.device, sampled: torch.Tensor,
                 pool=None, whole: bool = True):
        self.model = model
        self.sizes = sizes
        n, spec = sizes[-1], model.spec
        attn = model.model.layers[0].self_attn
        qkv_width = (attn.num_heads + 2 * attn.num_kv_heads) * attn.head_dim
        dtype = model.model.embed_tokens.weight.dtype
        # ids, positions, slots, where a row's token is still on the device (its row of `sampled`, else -1), and
        # (first WHOLE_GRAPH_PREFILLS + 2 columns) the whole-forward graphs' prefix sums: one [5, n] int64 tensor,
        # uploaded with one copy from a pinned twin.
        self.sampled = sampled
        self.header = torch.tensor([[0], [0], [trash_slot], [-1], [0]], device=device).repeat(1, n)
        self.cu = torch.zeros(WHOLE_GRAPH_PREFILLS + 2, dtype=torch.int32, device=device)
        self.staging = torch.empty_like(self.header, device="cpu").pin_memory()
        self.staging_free = torch.cuda.Event()
        self.qkv = torch.zeros(n, qkv_width, dtype=dtype, device=device)
        self.attn = torch.zeros(n, attn.num_heads * attn.head_dim, dtype=dtype, device=device)
        self.residual = torch.zeros(n, spec.hidden_size, dtype=dtype, device=device)
        self.hidden = torch.zeros(n, spec.hidden_size, dtype=dtype, device=device)
        self.graphs: dict[int, list[torch.cuda.CUDAGraph]] = {}
        for size in reversed(sizes):          # largest first: the smaller ones reuse its pool memory
            self._run_pieces(size)            # warm-up: Triton JIT, cuBLAS heuristics for this size
            graphs = []
            for i in range(model.num_pieces):
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool):
                    self._piece(i, size)
                pool = g.pool()
                graphs.append(g)
            self.graphs[size] = graphs
        self.whole: dict[int, torch.cuda.CUDAGraph] = {}
        if whole and n >= WHOLE_GRAPH_PREFILLS + 2:
            for size in reversed(sizes):
                self._forward(size)           # warm-up: the flash-attention call at these maxima
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool):
                    self._forward(size)
                pool = g.pool()
                self.whole[size] = g
        self.pool = pool
        torch.cuda.synchronize()

    def bucket(self, num_tokens: int) -> int | None:
        return next((s for s in self.sizes if s >= num_tokens), None)

    def _piece(self, i: int, size: int) -> None:
        ids, pos, slots, src = (self.header[r, :size] for r in range(4))
        meta = AttentionMetadata(slot_mapping=slots)      # all a piece reads of the metadata
        residual = self.residual[:size]
        inp = feed_ids(ids, src, self.sampled) if i == 0 else self.attn[:size]
        out, res = self.model.piece(i, inp, pos, None if i == 0 else residual, meta)
        if res.data_ptr() != residual.data_ptr():         # the embedding (piece 0); later norms add in place
            residual.copy_(res)
        (self.hidden if i == self.model.num_pieces - 1 else self.qkv)[:size].copy_(out)

    def _run_pieces(self, size: int) -> None:
        for i in range(self.model.num_pieces):
            self._piece(i, size)

    def _forward(self, size: int) -> None:
        """The whole forward at bucket `size` for a step of fresh prompts: pieces and flash attention in turn."""
        self.cu.copy_(self.header[4, :WHOLE_GRAPH_PREFILLS + 2])
        meta = AttentionMetadata(slot_mapping=self.header[2, :size], num_prefill_tokens=size, prefill_cu_q=self.cu,
                                 prefill_cu_k=self.cu, prefill_max_q=size, prefill_max_k=size)
        layers = self.model.model.layers
        for i in range(self.model.num_pieces):
            self._piece(i, size)
            if i < len(layers):
                layers[i].self_attn.attend(self.qkv[:size], meta, out=self.attn[:size])

    @staticmethod
    def fits_whole(step: dict) -> bool:
        """Whether a step runs as one whole-forward graph: fresh prompts only (varlen, no cached prefix, no
        decodes), at most WHOLE_GRAPH_PREFILLS of them."""
        return ("cu_q" in step and step["kv_slots"] is None and not step["decode_ctx"]
                and len(step["cu_q"]) <= WHOLE_GRAPH_PREFILLS + 1)

    def run(self, size: int, ids: list[int], src: list[int], pos: list[int], slots: list[int],
            meta: AttentionMetadata | None, trash_slot: int, cu: list[int] | None = None) -> torch.Tensor:
        """Hidden states [T, hidden] of one eager step's T tokens, run at bucket `size`: the rows past T are
        padding (position 0, their K/V written to the trash slot, their attention output stale). With `cu` (the
        prompts' prefix sums; fits_whole) one whole-forward graph replays, and `meta` is not read."""
        T = len(ids)
        self.staging_free.synchronize()
        h = self.staging.numpy()
        h[0, :T], h[1, :T], h[2, :T], h[3, :T] = ids, pos, slots, src
        h[0, T:size], h[1, T:size], h[2, T:size], h[3, T:size] = 0, 0, trash_slot, -1
        whole = self.whole.get(size) if cu is not None else None
        if whole is not None:
            # the padding rows are one more sequence; the table's other entries are empty sequences
            h[4, :len(cu)] = cu
            h[4, len(cu):WHOLE_GRAPH_PREFILLS + 2] = size
        self.header.copy_(self.staging, non_blocking=True)
        self.staging_free.record()
        if whole is not None:
            whole.replay()
            return self.hidden[:T]
        graphs = self.graphs[size]
        graphs[0].replay()
        for i, layer in enumerate(self.model.model.layers):
            layer.self_attn.attend(self.qkv[:T], meta, out=self.attn[:T])
            graphs[i + 1].replay()
        return self.hidden[:T]
