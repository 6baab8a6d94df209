"""Piecewise CUDA graphs for steps with prefill tokens (prefill chunks, mixed prefill + decode).

Their attention has shapes that change every step (sequences, lengths, cached prefixes), so it runs eagerly;
everything between two attentions (o_proj, norms, MLP, the next layer's qkv, RoPE and KV store) is one graph
per layer, captured at bucketed token counts. A step of T tokens runs at the next bucket: num_layers + 1 graph
replays and the eager attention between them, instead of ~12 host launches per layer. On a slow host that is
what bounds a short prefill (Llama-3.1-8B, 128 tokens, H200: 21.7 ms of host launches for 10.6 ms of GPU work).

The pieces talk through static buffers allocated outside the graphs (ids, positions, slots in; qkv, residual,
attention output, hidden states between pieces), so the graphs' own intermediates can share one memory pool:
pieces always replay in order on one stream.

A step whose prompts are all fresh (no cached prefix, at most WHOLE_GRAPH_PREFILLS of them) replays one graph for
the whole forward instead, attention included: flash attention's varlen call is captured with the bucket as both
maxima and a static table of prefix sums, padded by one sequence over the rows after the prompts and then by
empty ones. A step that also carries decodes replays a second such graph, in which the decode kernel then
overwrites those rows' attention: its grid is sized for the most decodes, and the count, the first decode row
and the split count are read from the device (attention.decode_attention_rows). The host then issues one replay
instead of two calls a layer (Llama-3.2-1B, lone 128-token prefill, H200: 1.79 -> 1.57 ms a step; beside 16
decodes 3.4 -> 2.3 ms; benchmarks/bench_prefill_graphs.py), at buckets up to WHOLE_GRAPH_MAX_TOKENS.

Above the largest bucket, ModelRunner._race_buckets may add larger ones at start-up (add()), each kept only while a
step just above the previous bucket replays faster on it than it runs eagerly.
"""
from __future__ import annotations

import torch

from planner.costmodel import PIECEWISE_TOKEN_SIZES, WHOLE_GRAPH_MAX_TOKENS, WHOLE_GRAPH_PREFILLS

from .attention import AttentionMetadata, DecodeRows
from .kernels import feed_ids


def piecewise_sizes(max_tokens: int, sizes: tuple[int, ...] = PIECEWISE_TOKEN_SIZES) -> tuple[int, ...]:
    """Those of `sizes` an engine with a `max_tokens` step budget captures: the ones below it and the first at or
    above it. The token buckets live with the cost model that prices steps at them (padding costs at most ~25%
    above 256 tokens); the larger ones (RACED_TOKEN_SIZES) only where a start-up race keeps them."""
    below = [s for s in sizes if s < max_tokens]
    return tuple(below + [s for s in sizes if s >= max_tokens][:1])


class PiecewiseGraphs:
    def __init__(self, model, sizes: tuple[int, ...], trash_slot: int, device: torch.device, sampled: torch.Tensor,
                 pool=None, whole: bool = True, max_decodes: int = 0, max_blocks_per_seq: int = 1,
                 max_rows: int = 0):
        """`max_rows`: room in the static buffers for buckets add() may capture later (default: the largest)."""
        self.model = model
        self.sizes = sizes
        n, spec = max(sizes[-1], max_rows), model.spec
        attn = model.model.layers[0].self_attn
        qkv_width = (attn.num_heads + 2 * attn.num_kv_heads) * attn.head_dim
        dtype = model.model.embed_tokens.weight.dtype
        # ids, positions, slots, where a row's token is still on the device (its row of `sampled`, else -1),
        # the whole-forward graphs' prefix sums (first WHOLE_GRAPH_PREFILLS + 2 columns), then their decode count
        # and first decode row, and the decodes' context lengths: one [6, n] int64 tensor, uploaded with one copy
        # from a pinned twin (the decodes' block tables with a second).
        self.sampled = sampled
        self.header = torch.tensor([[0], [0], [trash_slot], [-1], [0], [0]], device=device).repeat(1, n)
        self.cu = torch.zeros(WHOLE_GRAPH_PREFILLS + 2, dtype=torch.int32, device=device)
        # (initialised as the header: a bucket add() captures later warms up on rows no step has written yet)
        self.staging = self.header.cpu().pin_memory()
        self.staging_free = torch.cuda.Event()
        self.max_decodes = min(max_decodes, n - 1)
        self.tables = torch.zeros(max(1, self.max_decodes), max_blocks_per_seq, dtype=torch.int32, device=device)
        self.staging_tables = torch.empty(self.tables.numel(), dtype=torch.int32).pin_memory()
        self.decode = DecodeRows.allocate(max(1, self.max_decodes), attn.num_heads, attn.num_kv_heads, attn.head_dim,
                                          device, self.header[4, WHOLE_GRAPH_PREFILLS + 2:WHOLE_GRAPH_PREFILLS + 4])
        self.qkv = torch.zeros(n, qkv_width, dtype=dtype, device=device)
        self.attn = torch.zeros(n, attn.num_heads * attn.head_dim, dtype=dtype, device=device)
        self.residual = torch.zeros(n, spec.hidden_size, dtype=dtype, device=device)
        self.hidden = torch.zeros(n, spec.hidden_size, dtype=dtype, device=device)
        self.graphs: dict[int, list[torch.cuda.CUDAGraph]] = {}
        for size in reversed(sizes):          # largest first: the smaller ones reuse its pool memory
            pool = self._capture(size, pool)
        # bucket -> whole-forward graph of fresh prompts only, and one that also carries decodes
        self.whole: dict[int, torch.cuda.CUDAGraph] = {}
        self.whole_mixed: dict[int, torch.cuda.CUDAGraph] = {}
        if whole and n >= WHOLE_GRAPH_PREFILLS + 4:
            for size in reversed([s for s in sizes if s <= WHOLE_GRAPH_MAX_TOKENS]):
                for graphs, decodes in ((self.whole, False), (self.whole_mixed, True)):
                    if decodes and not self.max_decodes:
                        continue
                    self._forward(size, decodes)   # warm-up: the flash-attention call at these maxima
                    g = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(g, pool):
                        self._forward(size, decodes)
                    pool = g.pool()
                    graphs[size] = g
        self.pool = pool
        torch.cuda.synchronize()

    def _capture(self, size: int, pool):
        """The pieces' graphs at bucket `size`, into `pool`; returns the pool."""
        self._run_pieces(size)                # warm-up: Triton JIT, cuBLAS heuristics for this size
        graphs = []
        for i in range(self.model.num_pieces):
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool):
                self._piece(i, size)
            pool = g.pool()
            graphs.append(g)
        self.graphs[size] = graphs
        return pool

    def add(self, size: int) -> None:
        """Captures one more bucket, above the others (within the static buffers' rows)."""
        assert size > self.sizes[-1] and size <= self.header.shape[1]
        self.pool = self._capture(size, self.pool)
        self.sizes += (size,)
        torch.cuda.synchronize()

    def drop(self, size: int) -> None:
        """Forgets the largest bucket (add's, when eager steps were timed faster)."""
        assert size == self.sizes[-1]
        self.sizes = self.sizes[:-1]
        del self.graphs[size]

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

    def _forward(self, size: int, decodes: bool) -> None:
        """The whole forward at bucket `size` for a step of fresh prompts (and `decodes`): pieces and attention in
        turn."""
        self.cu.copy_(self.header[4, :WHOLE_GRAPH_PREFILLS + 2])
        meta = AttentionMetadata(slot_mapping=self.header[2, :size], num_prefill_tokens=size, prefill_cu_q=self.cu,
                                 prefill_cu_k=self.cu, prefill_max_q=size, prefill_max_k=size)
        if decodes:
            meta.decode_block_tables, meta.decode_context_lens, meta.decode_rows = self.tables, self.header[5], self.decode
        layers = self.model.model.layers
        for i in range(self.model.num_pieces):
            self._piece(i, size)
            if i < len(layers):
                layers[i].self_attn.attend(self.qkv[:size], meta, out=self.attn[:size])

    def whole_graph(self, step: dict) -> torch.cuda.CUDAGraph | None:
        """The whole-forward graph a step at bucket step["piecewise"] replays, if any: its prompts are all fresh
        (varlen, no cached prefix), at most WHOLE_GRAPH_PREFILLS of them, and its decodes within max_decodes."""
        if not ("cu_q" in step and step["kv_slots"] is None and len(step["cu_q"]) <= WHOLE_GRAPH_PREFILLS + 1):
            return None
        d = len(step["decode_ctx"])
        return (self.whole_mixed if d else self.whole).get(step["piecewise"]) if d <= self.max_decodes else None

    def run(self, step: dict, meta: AttentionMetadata | None, trash_slot: int, whole: bool) -> torch.Tensor:
        """Hidden states [T, hidden] of one eager step's T tokens (_host_inputs' dict), run at bucket
        step["piecewise"]: the rows past T are padding (position 0, their K/V written to the trash slot, their
        attention output stale). With `whole` (whole_graph) one whole-forward graph replays, and `meta` is not
        read."""
        size, T = step["piecewise"], len(step["ids"])
        self.staging_free.synchronize()
        h = self.staging.numpy()
        h[0, :T], h[1, :T], h[2, :T], h[3, :T] = step["ids"], step["pos"], step["slots"], step["src"]
        h[0, T:size], h[1, T:size], h[2, T:size], h[3, T:size] = 0, 0, trash_slot, -1
        graph = self.whole_graph(step) if whole else None
        if graph is not None:
            # the rows after the prompts are one more sequence; the table's other entries are empty sequences
            cu, ctx = step["cu_q"], step["decode_ctx"]
            h[4, :len(cu)] = cu
            h[4, len(cu):WHOLE_GRAPH_PREFILLS + 2] = size
            h[4, WHOLE_GRAPH_PREFILLS + 2:WHOLE_GRAPH_PREFILLS + 4] = len(ctx), step["num_prefill"]
            if ctx:
                h[5, :len(ctx)] = ctx
                width = len(step["decode_tables"][0])
                staged = self.staging_tables[:len(ctx) * width].view(len(ctx), width)
                staged.numpy()[:] = step["decode_tables"][:len(ctx)]
                # only the columns in use: the kernel never reads past a sequence's context
                self.tables[:len(ctx), :width].copy_(staged, non_blocking=True)
        self.header.copy_(self.staging, non_blocking=True)
        self.staging_free.record()
        if graph is not None:
            graph.replay()
            return self.hidden[:T]
        graphs = self.graphs[size]
        graphs[0].replay()
        for i, layer in enumerate(self.model.model.layers):
            layer.self_attn.attend(self.qkv[:T], meta, out=self.attn[:T])
            graphs[i + 1].replay()
        return self.hidden[:T]
