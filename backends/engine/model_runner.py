"""Runs one scheduled batch on the device: inputs, forward (CUDA graph for pure decode), sampling.

Host work builds small int tensors from Python lists and copies them from pinned memory without blocking;
the only device->host synchronisation of a step is reading the sampled tokens. `launch` queues a step and
returns at once; `collect` waits for its tokens. Between the two the host may launch the next step: a decode
row whose input token is still on the device (sampled by the step before, not yet read) names that token's
row of the `sampled` buffer (`feed`), and the step gathers it there, so the host's work for step n+1 runs
while the GPU runs step n (the engine's async scheduling).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass

import torch

from planner.costmodel import DECODE_GRAPH_SIZES, PIECEWISE_TOKEN_SIZES, RACED_TOKEN_SIZES

from . import fused_norms, parallel
from .attention import AttentionMetadata, decode_num_splits, varlen_supported
from .block_manager import cdiv
from .config import EngineConfig, EngineError, env_switch
from .kernels import feed_ids
from .model import build_model
from .piecewise import PiecewiseGraphs, piecewise_sizes
from .quant import SCHEMES, tune_linear_enabled
from .scheduler import ScheduledBatch
from .sequence import Sequence


def _graph_sizes() -> tuple[int, ...]:
    """DECODE_GRAPH_SIZES, or PLAN_ENGINE_GRAPH_BATCH_SIZES (comma-separated, ascending) to compare sets."""
    text = os.environ.get("PLAN_ENGINE_GRAPH_BATCH_SIZES")
    return tuple(sorted(int(v) for v in text.split(","))) if text else DECODE_GRAPH_SIZES


GRAPH_BATCH_SIZES = _graph_sizes()


def graph_batch_sizes(max_num_seqs: int) -> list[int]:
    """The decode batch sizes that get a CUDA graph: those of GRAPH_BATCH_SIZES below max_num_seqs, and the
    first one that holds it (a batch pads up to the next size)."""
    max_bs = min(max_num_seqs, GRAPH_BATCH_SIZES[-1])
    return [b for b in GRAPH_BATCH_SIZES if b < max_bs] + [next(b for b in GRAPH_BATCH_SIZES if b >= max_bs)]


@dataclass
class Launched:
    """A step queued on the device: its sampled tokens land in `host` (pinned) once `event` has passed. `begin`
    and `event` are timing events around the step's device work (CUDA only), so overlapping steps can be timed
    on the device (async scheduling)."""
    host: torch.Tensor
    event: torch.cuda.Event | None
    begin: torch.cuda.Event | None = None


class ModelRunner:
    """Rank 0 (or the only rank) is driven by the engine through `run`; under tensor parallelism it broadcasts
    each step's host inputs and ranks 1.. replay them in `worker_loop`, so every rank runs the same kernels
    and collectives in the same order (CUDA graphs included)."""

    def __init__(self, config: EngineConfig, rank: int = 0, port: int | None = None):
        self.config = config
        spec = config.model
        self.device = torch.device(config.device)
        if self.device.type == "cuda":
            if config.tp > 1:
                self.device = torch.device("cuda", rank)
            elif self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.set_device(self.device)
        if config.tp > 1:
            parallel.init(rank, config.tp, port, self.device)
        self.dtype = getattr(torch, config.torch_dtype_name("dtype"))
        self.kv_dtype = getattr(torch, config.torch_dtype_name("kv_dtype"))
        self.block_size = config.block_size
        self.max_model_len = config.max_model_len or spec.max_position_embeddings
        t0 = time.perf_counter()
        self.model = build_model(spec, self.max_model_len, self.dtype, self.device, config.quant)
        if config.load_format == "safetensors":
            self.model.load_safetensors(str(config.model_path))
        else:
            self.model.init_dummy(config.seed)
        self.weights_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        self.load_time_s = time.perf_counter() - t0
        # fp8 at 2-16 rows: the faster of the weight-only GEMV and _scaled_mm, per layer shape (before capture)
        self.fp8_gemv_rows = (SCHEMES["fp8"].tune(self.model, self.dtype)
                              if config.quant == "fp8" and self.device.type == "cuda" else None)
        t0 = time.perf_counter()
        self.linear_backends = self._tune_linears()
        self.fused_norms = self._fold_norms()
        self.linear_tune_s = time.perf_counter() - t0
        self.pinned = self.device.type == "cuda"
        # The last step's sampled tokens, by row, where the next step's decode rows may gather their inputs;
        # and two pinned host copies (one for the step in flight, one for the step being read).
        rows = max(config.max_num_seqs, GRAPH_BATCH_SIZES[-1])
        self.sampled = torch.zeros(rows, dtype=torch.long, device=self.device)
        self.host_tokens = [torch.zeros(rows, dtype=torch.long, pin_memory=self.pinned) for _ in range(2)]
        self.num_launched = 0
        self.num_kv_blocks = self._allocate_kv_cache()
        # A sequence never outgrows the cache (it could not be scheduled alone).
        self.max_model_len = min(self.max_model_len, self.num_kv_blocks * self.block_size)
        self.max_blocks_per_seq = cdiv(self.max_model_len, self.block_size)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.last_graph_bs: int | None = None      # for the step trace
        self.last_piecewise_size: int | None = None
        self.last_whole_graph = False
        self.piecewise: PiecewiseGraphs | None = None
        self.bucket_race_ms: dict[int, list[float]] = {}
        self.varlen = self.device.type == "cuda" and varlen_supported(
            torch.empty(1, 1, spec.head_dim, dtype=self.dtype, device=self.device))
        if self.device.type == "cuda" and self.num_kv_blocks >= 3:
            self._warm_eager_step()
        t0 = time.perf_counter()
        if config.cuda_graphs and self.device.type == "cuda":
            self._capture_graphs()
            # MoE layers under capture run every expert over every token: fine for decode, not for prefill.
            if not spec.is_moe:
                budget = config.max_num_batched_tokens
                raced = self._raced_sizes()
                self.piecewise = PiecewiseGraphs(self.model, piecewise_sizes(budget), self.trash_slot, self.device,
                                                 self.sampled, self.graph_pool,
                                                 whole=env_switch("PLAN_ENGINE_WHOLE_GRAPH"),
                                                 max_decodes=config.max_num_seqs,
                                                 max_blocks_per_seq=self.max_blocks_per_seq,
                                                 max_rows=max(raced, default=0))
                self._race_buckets(raced)
        self.capture_s = time.perf_counter() - t0

    def _tune_linears(self) -> dict | None:
        """bf16/fp16 linears at each decode graph's batch size: the fastest of cuBLAS, cuBLASLt and the Triton
        GEMV per weight shape, timed before capture so the graphs hold the winners (quant.Unquantized.tune).
        Not without graphs: an eager step would pay the library switch on every call. Where it does not run,
        tune() gets no sizes, which clears what an earlier runner of this process chose (schemes are shared)."""
        c = self.config
        tuned = tune_linear_enabled() and c.quant == "none" and self.device.type == "cuda" and c.cuda_graphs
        backends = SCHEMES["none"].tune(self.model, self.dtype, graph_batch_sizes(c.max_num_seqs) if tuned else [])
        return backends if tuned else None

    def _fold_norms(self) -> dict | None:
        """Where the race finds it faster, decode graphs fold each layer's RMSNorms into its GEMVs (fused_norms)."""
        if self.linear_backends is None or not fused_norms.eligible(self.model, self.dtype):
            self.model.fold_norms(())
            return None
        return fused_norms.tune(self.model, self.dtype, graph_batch_sizes(self.config.max_num_seqs))

    # ----------------------------------------------------------------------- KV cache
    def kv_bytes_per_token(self) -> int:
        s = self.config.model
        return 2 * s.num_layers * self.num_local_kv_heads * s.head_dim * self.kv_dtype.itemsize

    @property
    def num_local_kv_heads(self) -> int:
        return self.model.model.layers[0].self_attn.num_kv_heads

    def _allocate_kv_cache(self) -> int:
        s = self.config.model
        block_bytes = self.kv_bytes_per_token() * self.block_size
        num_blocks = self.config.num_kv_blocks
        if num_blocks is None and self.device.type != "cuda":
            num_blocks = EngineConfig.CPU_DEFAULT_KV_BLOCKS
        if num_blocks is None:
            num_blocks = self._blocks_from_memory(block_bytes)
        # Rank 0 schedules blocks for all ranks: every rank takes the smallest cache any of them can hold.
        num_blocks = parallel.min_over_ranks(num_blocks)
        if num_blocks < 1:
            raise EngineError(f"no memory left for the KV cache ({self.weights_bytes / 1e9:.1f} GB of weights); "
                              "raise --gpu-memory-utilization or use a smaller model")
        # One extra block at the end takes the writes of padded rows in CUDA-graph batches.
        self.trash_slot = num_blocks * self.block_size
        shape = (s.num_layers, num_blocks + 1, self.block_size, self.num_local_kv_heads, s.head_dim)
        self.k_cache = torch.zeros(shape, dtype=self.kv_dtype, device=self.device)
        self.v_cache = torch.zeros(shape, dtype=self.kv_dtype, device=self.device)
        for i, layer in enumerate(self.model.model.layers):
            layer.self_attn.k_cache, layer.self_attn.v_cache = self.k_cache[i], self.v_cache[i]
        return num_blocks

    def _blocks_from_memory(self, block_bytes: int) -> int:
        """vLLM's rule: total x utilization - (weights + peak activations of a max-size step + non-torch)."""
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        s = self.config.model
        # A one-block scratch cache takes the profiling step's K/V writes.
        scratch = torch.zeros(2, 2, self.block_size, self.num_local_kv_heads, s.head_dim, dtype=self.kv_dtype,
                              device=self.device)
        for layer in self.model.model.layers:
            layer.self_attn.k_cache, layer.self_attn.v_cache = scratch[0], scratch[1]
        num_tokens = self.config.max_num_batched_tokens
        seq_len = min(num_tokens, self.max_model_len)
        starts = list(range(0, num_tokens, seq_len))
        meta = AttentionMetadata(
            slot_mapping=torch.zeros(num_tokens, dtype=torch.long, device=self.device),
            num_prefill_tokens=num_tokens,
            prefill_seqs=[(a, min(seq_len, num_tokens - a), min(seq_len, num_tokens - a)) for a in starts],
            prefill_block_tables=[None] * len(starts))
        with torch.inference_mode():
            ids = torch.zeros(num_tokens, dtype=torch.long, device=self.device)
            pos = torch.cat([torch.arange(n, device=self.device) for _, n, _ in meta.prefill_seqs])
            hidden = self.model(ids, pos, meta)
            rows = min(self.config.max_num_seqs, num_tokens)
            self._sample(self.model.compute_logits(hidden[:rows]), [0.0] * rows, [None] * rows)
        torch.cuda.synchronize()
        del scratch, hidden
        torch.cuda.empty_cache()     # the activations' cached blocks would not fit the KV tensors anyway
        free_bytes, total_bytes = torch.cuda.mem_get_info()
        peak_bytes = torch.cuda.max_memory_allocated()
        non_torch_bytes = (total_bytes - free_bytes) - torch.cuda.memory_reserved()
        kv_bytes = total_bytes * self.config.gpu_memory_utilization - peak_bytes - non_torch_bytes
        return int(kv_bytes // block_bytes) if kv_bytes > 0 else 0     # block_bytes counts K and V

    def kv_info(self) -> dict:
        return {"event": "kv_cache", "num_kv_blocks": self.num_kv_blocks, "block_size": self.block_size,
                "kv_capacity_tokens": self.num_kv_blocks * self.block_size,
                "kv_bytes_per_token": self.kv_bytes_per_token(),
                "kv_cache_bytes": self.num_kv_blocks * self.block_size * self.kv_bytes_per_token(),
                "weights_bytes": self.weights_bytes, "weight_dtype": self.config.quant, "tp": self.config.tp,
                "max_model_len": self.max_model_len,
                "device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."),
                "cuda_graph_batch_sizes": sorted(self.graphs),
                "piecewise_sizes": list(self.piecewise.sizes) if self.piecewise else [],
                "bucket_race_ms": {str(k): v for k, v in self.bucket_race_ms.items()},
                "varlen_prefill": self.varlen, "whole_graph_prefill": bool(self.piecewise and self.piecewise.whole),
                "whole_graph_mixed": bool(self.piecewise and self.piecewise.whole_mixed),
                "whole_graph_max_tokens": max(self.piecewise.whole, default=0) if self.piecewise else 0,
                "fp8_gemv_rows": self.fp8_gemv_rows,
                "linear_backends": self.linear_backends, "fused_norms": self.fused_norms,
                "linear_tune_s": round(self.linear_tune_s, 3), "graph_capture_s": round(self.capture_s, 3)}

    # ----------------------------------------------------------------------- inputs
    def _tensor(self, data, dtype) -> torch.Tensor:
        t = torch.tensor(data, dtype=dtype, pin_memory=self.pinned)
        return t.to(self.device, non_blocking=True)

    def _host_inputs(self, batch: ScheduledBatch, pad_to: int = 0, feed: dict | None = None) -> dict:
        """Flat token inputs as host lists: prefill chunks first, then decodes, padded to `pad_to` rows. `feed`
        maps a sequence whose next input token is still on the device to that token's row of `sampled`."""
        bm_size = self.block_size
        ids, pos, slots, src = [], [], [], []
        prefill_seqs, prefill_tables = [], []
        decode_tables, decode_ctx = [], []
        sample_rows = []
        for seq, n in batch.items:
            start = seq.num_computed_tokens
            row = len(ids)
            j = feed.get(seq, -1) if feed else -1
            ids += seq.token_ids[start:start + n] if j < 0 else [0]
            src += [-1] * n if j < 0 else [j]
            pos += range(start, start + n)
            table = seq.block_table
            slots += [table[p // bm_size] * bm_size + p % bm_size for p in range(start, start + n)]
            if n > 1:
                prefill_seqs.append((row, n, start + n))
                prefill_tables.append(table[:cdiv(start + n, bm_size)] if start else None)
            else:
                decode_tables.append(table)
                decode_ctx.append(start + 1)
            if start + n == seq.num_tokens:   # the whole sequence is fed: sample its next token
                sample_rows.append(len(ids) - 1)
        num_prefill = len(ids) - len(decode_ctx)
        pad = max(0, pad_to - len(decode_ctx))
        ids += [0] * pad
        src += [-1] * pad
        pos += [0] * pad
        slots += [self.trash_slot] * pad
        decode_ctx += [1] * pad
        width = max((len(t) for t in decode_tables), default=1)
        decode_tables = [t + [0] * (width - len(t)) for t in decode_tables] + [[0] * width] * pad
        step = dict(ids=ids, src=src, fed=any(j >= 0 for j in src), pos=pos, slots=slots, num_prefill=num_prefill,
                    prefill_seqs=prefill_seqs,
                    prefill_tables=prefill_tables, decode_tables=decode_tables, decode_ctx=decode_ctx,
                    sample_rows=sample_rows)
        if self.varlen and prefill_seqs:
            step.update(self._varlen_inputs(batch))
        return step

    def _varlen_inputs(self, batch: ScheduledBatch) -> dict:
        """One flash-attention call for all prefill chunks: prefix sums of query and key lengths, and when any
        chunk follows a cached prefix, the cache slots of every chunk's whole context (gathered as its keys)."""
        bs = self.block_size
        pre = [(seq, n) for seq, n in batch.items if n > 1]
        cu_q, cu_k = [0], [0]
        for seq, n in pre:
            cu_q.append(cu_q[-1] + n)
            cu_k.append(cu_k[-1] + seq.num_computed_tokens + n)
        kv_slots = None
        if any(seq.num_computed_tokens for seq, _ in pre):
            kv_slots = [seq.block_table[p // bs] * bs + p % bs for seq, n in pre
                        for p in range(seq.num_computed_tokens + n)]
        return dict(cu_q=cu_q, cu_k=cu_k, max_q=max(n for _, n in pre),
                    max_k=max(seq.num_computed_tokens + n for seq, n in pre), kv_slots=kv_slots)

    def _device_inputs(self, h: dict, token_inputs: bool = True):
        """(ids, positions, metadata) on the device; without `token_inputs` only what attention reads (the
        piecewise graphs upload ids, positions and slots into their own buffers)."""
        meta = AttentionMetadata(
            slot_mapping=self._tensor(h["slots"], torch.long) if token_inputs else None,
            num_prefill_tokens=h["num_prefill"],
            prefill_seqs=h["prefill_seqs"],
            # per-sequence block tables only for the per-sequence path (varlen gathers by slot instead)
            prefill_block_tables=[None if t is None or "cu_q" in h else self._tensor(t, torch.int32)
                                  for t in h["prefill_tables"]])
        if "cu_q" in h:
            meta.prefill_cu_q = self._tensor(h["cu_q"], torch.int32)
            meta.prefill_cu_k = self._tensor(h["cu_k"], torch.int32)
            meta.prefill_max_q, meta.prefill_max_k = h["max_q"], h["max_k"]
            if h["kv_slots"] is not None:
                meta.prefill_kv_slots = self._tensor(h["kv_slots"], torch.long)
        if h["decode_ctx"]:
            meta.decode_block_tables = self._tensor(h["decode_tables"], torch.int32)
            # int64 like the CUDA-graph header: one compiled decode kernel serves both paths (an int32 copy
            # here compiled a second variant on the first eager step of each split count, ~0.4 s each).
            meta.decode_context_lens = self._tensor(h["decode_ctx"], torch.long)
            meta.decode_num_splits = decode_num_splits(len(h["decode_ctx"]), self.num_local_kv_heads, self.device)
        if not token_inputs:
            return None, None, meta
        ids = self._tensor(h["ids"], torch.long)
        if h["fed"]:
            ids = feed_ids(ids, self._tensor(h["src"], torch.long), self.sampled)
        return ids, self._tensor(h["pos"], torch.long), meta

    # ----------------------------------------------------------------------- forward
    def run(self, batch: ScheduledBatch) -> list[int]:
        """Feeds the batch; returns the sampled token of each sequence fed to its end, in batch order."""
        return self.collect(self.launch(batch))

    @torch.inference_mode()
    def launch(self, batch: ScheduledBatch, feed: dict | None = None) -> Launched | None:
        """Queues the batch (`feed`: see _host_inputs); None when no sequence samples in it."""
        begin = self._timing_event()
        num_decode = sum(1 for _, n in batch.items if n == 1)
        graph_bs = next((b for b in sorted(self.graphs) if b >= num_decode), None)
        self.last_graph_bs = graph_bs if num_decode == len(batch.items) else None
        step = self._host_inputs(batch, pad_to=self.last_graph_bs or 0, feed=feed)
        step["graph_bs"] = self.last_graph_bs
        self.last_piecewise_size = step["piecewise"] = (
            self.piecewise.bucket(len(step["ids"])) if self.piecewise and self.last_graph_bs is None else None)
        self.last_whole_graph = step["piecewise_whole"] = bool(
            step["piecewise"] and self.piecewise.whole_graph(step) is not None)
        if self.config.tp > 1:
            parallel.broadcast(step)
        logits = self._execute(step)
        seqs = [seq for seq, n in batch.items if seq.num_computed_tokens + n == seq.num_tokens]
        if not seqs:
            return None
        n = len(seqs)
        tokens = self._sample(logits, [s.params.temperature for s in seqs], seqs)
        self.sampled[:n].copy_(tokens)
        host = self.host_tokens[self.num_launched % 2][:n]
        self.num_launched += 1
        host.copy_(self.sampled[:n], non_blocking=self.pinned)
        return Launched(host, self._timing_event(), begin)

    def _timing_event(self) -> torch.cuda.Event | None:
        """A timing event recorded now on the device's stream (None on CPU)."""
        if self.device.type != "cuda":
            return None
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    @staticmethod
    def collect(launched: Launched | None) -> list[int]:
        """The sampled tokens of a launched step, in batch order (waits for the step to finish)."""
        if launched is None:
            return []
        if launched.event is not None:
            launched.event.synchronize()
        return launched.host.tolist()

    def _execute(self, step: dict) -> torch.Tensor:
        """Logits of the sampled rows of one step (the same work on every rank)."""
        rows, bs = step["sample_rows"], step["graph_bs"]
        if bs is not None:
            logits = self._replay(bs, step)
            return logits[self._tensor(rows, torch.long)] if len(rows) < bs else logits
        if step.get("piecewise"):
            whole = step["piecewise_whole"]
            meta = None if whole else self._device_inputs(step, token_inputs=False)[2]
            hidden = self.piecewise.run(step, meta, self.trash_slot, whole)
        else:
            ids, pos, meta = self._device_inputs(step)
            hidden = self.model(ids, pos, meta)
        return self.model.compute_logits(hidden[self._tensor(rows, torch.long)])

    @torch.inference_mode()
    def worker_loop(self) -> None:
        """Ranks 1..: run rank 0's steps until it broadcasts None (shutdown)."""
        while (step := parallel.broadcast()) is not None:
            self._execute(step)

    def shutdown(self) -> None:
        if self.config.tp > 1:
            if parallel.rank() == 0:
                parallel.broadcast(None)
            parallel.shutdown()

    def _sample(self, logits: torch.Tensor, temperatures: list[float], seqs: list[Sequence | None]):
        greedy = logits.argmax(dim=-1)
        if not any(t > 0 for t in temperatures):
            return greedy
        temps = self._tensor(temperatures, torch.float32)
        probs = torch.softmax(logits.float() / temps.clamp(min=1e-5)[:, None], dim=-1)
        # Gumbel-max via exponential noise; a seeded request draws its noise from its own generator, so its
        # output does not depend on what else is in the batch.
        noise = torch.empty_like(probs).exponential_(1.0)
        for i, seq in enumerate(seqs):
            if seq is not None and seq.params.temperature > 0 and seq.params.seed is not None:
                if seq.generator is None:
                    seq.generator = torch.Generator(device=self.device).manual_seed(seq.params.seed)
                noise[i].exponential_(1.0, generator=seq.generator)
        sampled = (probs / noise).argmax(dim=-1)
        return torch.where(temps > 0, sampled, greedy)

    def _raced_sizes(self) -> tuple[int, ...]:
        """The buckets above the piecewise ones that may replace eager steps within the step budget (the start-up
        race decides). None with several ranks (each would race on its own) or PLAN_ENGINE_RACE_BUCKETS=0."""
        budget = self.config.max_num_batched_tokens
        if self.config.tp > 1 or not env_switch("PLAN_ENGINE_RACE_BUCKETS") or budget <= PIECEWISE_TOKEN_SIZES[-1]:
            return ()
        return piecewise_sizes(budget, RACED_TOKEN_SIZES)

    @torch.inference_mode()
    def _race_buckets(self, sizes: tuple[int, ...]) -> None:
        """Captures `sizes` in turn while a fresh prompt one token above the previous bucket (the most padding)
        runs faster replayed on the new bucket than eagerly; from the first where it does not, steps above the
        buckets run eagerly. Its K/V go to the trash slot. Times (eager, graph ms, best of 3) in bucket_race_ms."""
        pw = self.piecewise
        for size in sizes:
            T = pw.sizes[-1] + 1
            step = dict(ids=[(7919 * i) % self.config.model.vocab_size for i in range(T)], src=[-1] * T, fed=False,
                        pos=list(range(T)), slots=[self.trash_slot] * T, num_prefill=T, prefill_seqs=[(0, T, T)],
                        prefill_tables=[None], decode_tables=[], decode_ctx=[], sample_rows=[T - 1], graph_bs=None,
                        piecewise_whole=False)
            if self.varlen:
                step.update(cu_q=[0, T], cu_k=[0, T], max_q=T, max_k=T, kv_slots=None)
            times = []
            for bucket in (None, size):
                if bucket:
                    pw.add(size)
                step["piecewise"] = bucket
                runs = []
                for _ in range(4):                      # the first warms up
                    t0 = time.perf_counter()
                    self._execute(step)
                    torch.cuda.synchronize()
                    runs.append(time.perf_counter() - t0)
                times.append(round(min(runs[1:]) * 1e3, 3))
            self.bucket_race_ms[size] = times
            if times[1] >= times[0]:
                pw.drop(size)
                break

    @torch.inference_mode()
    def _warm_eager_step(self) -> None:
        """Runs one small mixed step at start: a prompt chunk after a cached prefix (gathered K/V, bottom-right
        causal flash attention) beside one eager decode, so those paths' first-use costs (kernel loading, cuBLAS
        heuristics) are paid before requests wait. Blocks 0-2 are scratch here: a block's K/V are written before
        they are read once it is allocated."""
        bs = self.block_size
        table, chunk = [0, 1], range(bs, 2 * bs)
        step = dict(ids=[1] * (bs + 1), src=[-1] * (bs + 1), fed=False, pos=[*chunk, 0],
                    slots=[*(table[p // bs] * bs + p % bs for p in chunk), 2 * bs],
                    num_prefill=bs, prefill_seqs=[(0, bs, 2 * bs)], prefill_tables=[table], decode_tables=[[2]],
                    decode_ctx=[1], sample_rows=[bs - 1, bs], graph_bs=None)
        if self.varlen:
            step.update(cu_q=[0, bs], cu_k=[0, 2 * bs], max_q=bs, max_k=2 * bs, kv_slots=list(range(2 * bs)))
        self._execute(step)
        torch.cuda.synchronize()

    # ----------------------------------------------------------------------- CUDA graphs
    def _capture_graphs(self) -> None:
        sizes = graph_batch_sizes(self.config.max_num_seqs)
        n = sizes[-1]
        dev = self.device
        # The graphs' inputs: ids, positions, slots and context lengths are the rows of one [4, n] int64 tensor
        # (int64 context lengths: the decode kernel takes either), uploaded with one copy from a pinned
        # twin; the block tables with a second. Building ~10 small tensors and copies per step instead made
        # run() 0.30 ms (batch 1) to 1.6 ms (batch 256) longer than the replay on an H200; now 0.12 to 0.6.
        self.graph_header = torch.tensor([[0], [0], [self.trash_slot], [1], [-1]], device=dev).repeat(1, n)
        self.graph_ids, self.graph_pos, self.graph_slots, self.graph_ctx, self.graph_src = self.graph_header
        self.graph_tables = torch.zeros(n, self.max_blocks_per_seq, dtype=torch.int32, device=dev)
        self.staging_header = torch.empty_like(self.graph_header, device="cpu").pin_memory()
        self.staging_tables = torch.empty(self.graph_tables.numel(), dtype=torch.int32).pin_memory()
        self.staging_free = torch.cuda.Event()      # recorded once the last upload has read the staging buffers
        self.graph_logits: dict[int, torch.Tensor] = {}
        pool = None
        with torch.inference_mode():
            for bs in reversed(sizes):   # largest first, so the smaller graphs reuse its memory pool
                meta = AttentionMetadata(slot_mapping=self.graph_slots[:bs], decode_block_tables=self.graph_tables[:bs],
                                         decode_context_lens=self.graph_ctx[:bs],
                                         decode_num_splits=decode_num_splits(bs, self.num_local_kv_heads, dev))
                def forward(bs=bs, meta=meta):
                    ids = feed_ids(self.graph_ids[:bs], self.graph_src[:bs], self.sampled)
                    return self.model.compute_logits(self.model(ids, self.graph_pos[:bs], meta))
                forward()                                            # warm-up: Triton JIT, cuBLAS handles
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool):
                    self.graph_logits[bs] = forward()
                pool = graph.pool()
                self.graphs[bs] = graph
        self.graph_pool = pool
        torch.cuda.synchronize()

    def _replay(self, bs: int, h: dict) -> torch.Tensor:
        """Uploads step `h`'s host inputs (padded to `bs` rows) into the graph's buffers and replays it."""
        self.staging_free.synchronize()     # a worker rank does not sync per step: don't overwrite in flight
        header = self.staging_header.numpy()
        for i, key in enumerate(("ids", "pos", "slots", "decode_ctx", "src")):
            header[i, :bs] = h[key]
        tables = h["decode_tables"]
        width = len(tables[0])
        staged = self.staging_tables[:bs * width].view(bs, width)
        staged.numpy()[:] = tables
        self.graph_header.copy_(self.staging_header, non_blocking=True)
        # Only the columns in use: the kernel never reads past a sequence's context.
        self.graph_tables[:bs, :width].copy_(staged, non_blocking=True)
        self.staging_free.record()
        self.graphs[bs].replay()
        return self.graph_logits[bs]


def log_json(record: dict) -> None:
    print(json.dumps(record), file=sys.stderr, flush=True)
