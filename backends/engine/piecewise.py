"""Piecewise CUDA graphs for steps with prefill tokens (prefill chunks, mixed prefill + decode).

Their attention has shapes that change every step (sequences, lengths, cached prefixes), so it runs eagerly;
everything between two attentions (o_proj, norms, MLP, the next layer's qkv, RoPE and KV store) is one graph
per layer, captured at bucketed token counts. A step of T tokens runs at the next bucket: num_layers + 1 graph
replays and the eager attention between them, instead of ~12 host launches per layer. On a slow host that is
what bounds a short prefill (Llama-3.1-8B, 128 tokens, H200: 21.7 ms of host launches for 10.6 ms of GPU work).

The pieces talk through static buffers allocated outside the graphs (ids, positions, slots in; qkv, residual,
attention output, hidden states between pieces), so the graphs' own intermediates can share one memory pool:
pieces always replay in order on one stream.
"""
from __future__ import annotations

import torch

from planner.costmodel import PIECEWISE_TOKEN_SIZES

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
                 pool=None):
        self.model = model
        self.sizes = sizes
        n, spec = sizes[-1], model.spec
        attn = model.model.layers[0].self_attn
        qkv_width = (attn.num_heads + 2 * attn.num_kv_heads) * attn.head_dim
        dtype = model.model.embed_tokens.weight.dtype
        # ids, positions, slots, and where a row's token is still on the device (its row of `sampled`, else -1):
        # one [4, n] int64 tensor, uploaded with one copy from a pinned twin.
        self.sampled = sampled
        self.header = torch.tensor([[0], [0], [trash_slot], [-1]], device=device).repeat(1, n)
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

    def run(self, size: int, ids: list[int], src: list[int], pos: list[int], slots: list[int], meta: AttentionMetadata,
            trash_slot: int) -> torch.Tensor:
        """Hidden states [T, hidden] of one eager step's T tokens, run at bucket `size`: the rows past T are
        padding (position 0, their K/V written to the trash slot, their attention output stale)."""
        T = len(ids)
        self.staging_free.synchronize()
        h = self.staging.numpy()
        h[0, :T], h[1, :T], h[2, :T], h[3, :T] = ids, pos, slots, src
        h[0, T:size], h[1, T:size], h[2, T:size], h[3, T:size] = 0, 0, trash_slot, -1
        self.header.copy_(self.staging, non_blocking=True)
        self.staging_free.record()
        graphs = self.graphs[size]
        graphs[0].replay()
        for i, layer in enumerate(self.model.model.layers):
            layer.self_attn.attend(self.qkv[:T], meta, out=self.attn[:T])
            graphs[i + 1].replay()
        return self.hidden[:T]
