"""Cost and memory formulas against hand-computed values, and their monotonic properties."""
import math

import pytest
from hypothesis import given, settings, strategies as st

from planner import catalog
from planner.costmodel import (Batch, Deployment, allreduce_time_s, expected_active_experts, gemm_cost, gemm_time_s,
                               grouped_gemm_cost, prepare, step_ops, step_time_s)
from planner.memory import memory_breakdown, weight_bytes_per_gpu
from planner.params import param_counts
from planner.schemas import Efficiency, HardwareProfile, Interconnect

# A round-number GPU so every expected value below can be worked out by hand.
TOY = HardwareProfile(
    name="TOY", memory_bytes=100e9, memory_bandwidth_bytes_per_s=1e12, peak_flops={"bf16": 1e15, "fp8": 2e15},
    interconnect=Interconnect(kind="link", bandwidth_bytes_per_s=100e9), tdp_w=500, price_per_gpu_hour=2.0,
    efficiency=Efficiency(gemm={"bf16": 0.5, "fp8": 0.5}, memory=0.5, kernel_overhead_s=0.0,
                          allreduce_alpha_s=20e-6, allreduce_busbw_fraction=0.5, runtime_overhead_bytes=1e9))


def test_gemm_memory_bound_by_hand():
    # m=1, n=k=1000 bf16: bytes = 1000*1000*2 + 1000*2 + 1000*2 = 2.004e6 at 0.5 TB/s -> 4.008 us
    c = gemm_cost(prepare(TOY), "g", 1, 1000, 1000)
    assert c.flops == 2e6
    assert c.bytes == pytest.approx(2.004e6)
    assert c.time_s == pytest.approx(4.008e-6)
    assert c.bound == "memory"


def test_gemm_compute_bound_by_hand():
    # m=n=k=4096: 2*4096^3 = 1.374e11 FLOP at 0.5 PFLOP/s = 274.9 us; bytes 3*4096^2*2 = 100.7 MB -> 201 us
    c = gemm_cost(prepare(TOY), "g", 4096, 4096, 4096)
    assert c.time_s == pytest.approx(2 * 4096 ** 3 / 0.5e15)
    assert c.bound == "compute"


def test_fp8_gemm_uses_fp8_peak_and_one_byte_weights():
    # The bare kernel as the profiler times it: weights 1e6 bytes, activations in 1000 (fp8), out 2000
    # -> 1.003e6 bytes at 0.5 of 1 TB/s
    assert gemm_time_s(TOY, 1, 1000, 1000, "fp8") == pytest.approx(2.006e-6)


def test_fp8_linear_as_the_engine_runs_it():
    hw = prepare(TOY)
    # <= 16 rows: weight-only GEMV, bf16 activations in and out, at fp8_gemv_memory of the bandwidth
    c = gemm_cost(hw, "g", 1, 1000, 1000, "fp8")
    assert c.bytes == pytest.approx(1e6 + 2 * 1000 * 2)
    assert c.time_s == pytest.approx(1.004e6 / (1e12 * TOY.efficiency.fp8_gemv_memory))
    # above: the per-token quantize kernel (read bf16, write fp8 + a fp32 scale per row) comes on top
    bare = gemm_time_s(TOY, 64, 1000, 1000, "fp8")
    c = gemm_cost(hw, "g", 64, 1000, 1000, "fp8")
    quant_bytes = 64 * 1000 * 3 + 64 * 4
    assert c.time_s == pytest.approx(bare + max(quant_bytes / (1e12 * TOY.efficiency.memory),
                                                TOY.efficiency.graph_kernel_overhead_s))


def test_allreduce_by_hand():
    # alpha 20 us + 1e6 B * 2*3/4 / (100 GB/s * 0.5) = 20 us + 30 us
    assert allreduce_time_s(TOY, 1e6, 4) == pytest.approx(50e-6)
    assert allreduce_time_s(TOY, 1e6, 1) == 0.0


def test_kv_bytes_per_token_gqa_mla_and_replication():
    llama8 = catalog.load_model("llama-8b")
    # 32 layers x 2 (K,V) x 8 heads x 128 dims x 2 bytes
    assert Deployment(llama8).kv_bytes_per_token() == 32 * 2 * 8 * 128 * 2 == 131072
    assert Deployment(llama8, tp=2).kv_bytes_per_token() == 65536
    assert Deployment(llama8, tp=16).kv_bytes_per_token() == 32 * 2 * 1 * 128 * 2   # replicated KV heads
    assert Deployment(llama8, kv_dtype="fp8").kv_bytes_per_token() == 65536
    ds = catalog.load_model("deepseek-v3")
    assert Deployment(ds).kv_bytes_per_token() == 61 * (512 + 64) * 2           # latent + rope key
    assert Deployment(ds, tp=8).kv_bytes_per_token() == 61 * (512 + 64) * 2      # not sharded by TP


def test_expected_active_experts():
    assert expected_active_experts(8, 2, 1) == pytest.approx(2.0)
    assert expected_active_experts(8, 2, 10_000) == pytest.approx(8.0)
    # two tokens: 8 * (1 - (6/8)^2) = 3.5
    assert expected_active_experts(8, 2, 2) == pytest.approx(3.5)


def test_grouped_expert_gemm_by_hand():
    # 4 experts of [k=1000, n=2000], 8 routed rows (2 each), bf16 on TOY: one kernel streams all four weights:
    # bytes = 4 * 2000 * 1000 * 2 + 8 * 1000 * 2 + 8 * 2000 * 2 = 16.048e6 at 0.5 TB/s -> 32.096 us
    c = grouped_gemm_cost(prepare(TOY), "g", 8, 4, 2000, 1000, "bf16", 1, True, 4)
    assert c.flops == 2 * 8 * 2000 * 1000
    assert c.bytes == pytest.approx(16.048e6)
    assert c.time_s == pytest.approx(32.096e-6)


@pytest.mark.parametrize("model,tp", [("deepseek-v3", 8), ("mixtral-8x7b", 2), ("qwen3-30b-a3b", 1)])
@pytest.mark.parametrize("batch", [Batch.of([(1024, 0)]), Batch(decode_seqs=32, decode_ctx_tokens=32 * 1152)])
def test_fp8_experts_are_not_slower_than_bf16(model, tp, batch):
    """fp8 experts move half the bytes of bf16 ones: not slower on the calibrated H200. Priced as separate small
    GEMMs, each with its own activation quantize, DeepSeek-V3's came out nearly twice as slow."""
    hw = prepare(catalog.load_hardware("h200"))
    spec = catalog.load_model(model)
    ops = {w: {o.name: o for o in step_ops(hw, Deployment(spec, tp, 1, w, "fp8"), batch)} for w in ("bf16", "fp8")}
    for name in ("moe_gate_up", "moe_down"):
        fp8, bf16 = ops["fp8"][name], ops["bf16"][name]
        assert fp8.bytes < bf16.bytes
        assert fp8.total_s < bf16.total_s


def test_fp8_deepseek_prefill_faster_than_bf16():
    hw = prepare(catalog.load_hardware("h200"))
    spec = catalog.load_model("deepseek-v3")
    b = Batch.of([(1024, 0)])
    assert step_time_s(hw, Deployment(spec, 8, 1, "fp8", "fp8"), b) < step_time_s(hw, Deployment(spec, 8), b)


def test_decode_attention_bytes_by_hand():
    m = catalog.load_model("llama-8b")
    d = Deployment(m)
    b = Batch(decode_seqs=4, decode_ctx_tokens=4000)
    ops = {o.name: o for o in __import__("planner.costmodel", fromlist=["x"]).step_ops(TOY, d, b)}
    att = ops["attention_decode"]
    # per layer: 4000 tokens x 4096 B of K+V (8 heads x 128 x 2 x 2 B) + q/o 4 seqs x 32 heads x 256 x 2 B
    assert att.bytes == pytest.approx(4000 * 4096 + 4 * 32 * 256 * 2)
    assert att.count == 32


def test_weights_llama8b_bf16_match_param_count():
    m = catalog.load_model("llama-8b")
    assert weight_bytes_per_gpu(Deployment(m)) == pytest.approx(param_counts(m).total * 2)


def test_memory_breakdown_by_hand():
    m = catalog.load_model("llama-8b")
    d = Deployment(m)
    mem = memory_breakdown(TOY, d, 8192, 256, 0.9, 2048)
    w = param_counts(m).total * 2
    kv = 90e9 - w - mem.activation_bytes - 1e9
    assert mem.kv_cache_bytes == pytest.approx(kv)
    assert mem.kv_capacity_tokens == math.floor(kv / (131072 * 16)) * 16
    assert mem.fits


def test_70b_bf16_does_not_fit_one_80gb_gpu():
    m = catalog.load_model("llama-70b")
    h100 = catalog.load_hardware("h100", "datasheet")
    mem = memory_breakdown(h100, Deployment(m), 8192, 256, 0.9, 2048)
    assert not mem.fits and mem.shortfall_bytes > 60e9


MODELS = ["llama-8b", "llama-70b", "mixtral-8x7b", "qwen3-30b-a3b", "deepseek-v3", "gemma2-9b"]


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from(MODELS), tp=st.sampled_from([1, 2, 4, 8]), batch=st.integers(1, 512),
       ctx=st.integers(1, 32768), extra=st.integers(1, 256), prefill=st.integers(0, 4096))
def test_step_time_never_decreases_with_batch_or_context(model, tp, batch, ctx, extra, prefill):
    hw = catalog.load_hardware("h200")
    d = Deployment(catalog.load_model(model), tp=tp)
    base = Batch(prefill, 1 if prefill else 0, prefill * (prefill + 1) / 2, prefill, batch, batch * ctx)
    more_batch = Batch(prefill, base.prefill_seqs, base.prefill_pairs, prefill, batch + extra,
                       (batch + extra) * ctx)
    more_ctx = Batch(prefill, base.prefill_seqs, base.prefill_pairs, prefill, batch, batch * (ctx + extra))
    t = step_time_s(hw, d, base)
    assert step_time_s(hw, d, more_batch) >= t * (1 - 1e-12)
    assert step_time_s(hw, d, more_ctx) >= t * (1 - 1e-12)


@settings(max_examples=40, deadline=None)
@given(model=st.sampled_from(MODELS + ["llama-405b", "qwen3-235b-a22b"]),
       dtype=st.sampled_from(["bf16", "fp8", "int8", "int4"]), pp=st.sampled_from([1, 2, 4]))
def test_weight_memory_monotonic_in_tp_and_dtype(model, dtype, pp):
    m = catalog.load_model(model)
    per_tp = [weight_bytes_per_gpu(Deployment(m, tp=tp, pp=pp, weight_dtype=dtype)) for tp in (1, 2, 4, 8)]
    assert all(a >= b for a, b in zip(per_tp, per_tp[1:]))
    assert weight_bytes_per_gpu(Deployment(m, pp=pp, weight_dtype="fp8")) <= \
        weight_bytes_per_gpu(Deployment(m, pp=pp, weight_dtype="bf16"))


def test_steps_with_prefill_run_at_the_piecewise_bucket():
    from planner.costmodel import piecewise_bucket
    m = catalog.load_model("llama-8b")
    d = Deployment(m)
    assert piecewise_bucket(d, Batch.of([(100, 0)])) == 128
    assert piecewise_bucket(d, Batch.of([(1000, 0)], [500] * 30)) == 1152      # decodes count as tokens
    assert piecewise_bucket(d, Batch.of([(528, 0)])) == 640
    assert piecewise_bucket(d, Batch.of([(5000, 0)])) is None                  # above the largest: eager
    assert piecewise_bucket(Deployment(m, cuda_graphs=False), Batch.of([(100, 0)])) is None
    assert piecewise_bucket(Deployment(catalog.load_model("mixtral-8x7b")), Batch.of([(100, 0)])) is None
    # A piecewise step is priced at its bucket: 129 tokens cost what 256 do on the GPU side.
    h = prepare(TOY)
    eager = Deployment(m, piecewise_sizes=())
    assert step_time_s(h, d, Batch.of([(129, 0)])) > step_time_s(h, eager, Batch.of([(129, 0)]))


def test_soft_roofline_corner():
    from planner.costmodel import roofline_s
    h = prepare(TOY)
    # 1e9 FLOP at 0.5 of 1 PFLOP/s = 2 us; 1e6 bytes at 0.5 of 1 TB/s = 2 us: equal, the knee adds 2^s
    hard, _ = roofline_s(h, 1e9, 1e6, "bf16", 0.5, 0.5)
    soft, _ = roofline_s(h, 1e9, 1e6, "bf16", 0.5, 0.5, knee=0.25)
    assert hard == pytest.approx(2e-6)
    assert soft == pytest.approx(2e-6 * 2 ** 0.25)
    far, _ = roofline_s(h, 1e9, 4e6, "bf16", 0.5, 0.5, knee=0.25)             # memory 4x compute
    assert far == pytest.approx(8e-6, rel=0.01)


def test_prefill_attention_efficiency_by_length_and_head_size():
    curves = {"64": [{"x": 512, "y": 0.05}, {"x": 8192, "y": 0.25}],
              "128": [{"x": 512, "y": 0.1}, {"x": 8192, "y": 0.4}]}
    h = prepare(TOY.model_copy(update={"efficiency": TOY.efficiency.model_copy(
        update={"attention_compute_by_len": Efficiency(attention_compute_by_len=curves).attention_compute_by_len})}))
    assert h.attention_compute_efficiency(512, 128) == pytest.approx(0.1)
    assert h.attention_compute_efficiency(8192, 64) == pytest.approx(0.25)
    assert h.attention_compute_efficiency(8192, 96) in (pytest.approx(0.4), pytest.approx(0.25))   # nearest size
    assert h.attention_compute_efficiency(2048, 128) == pytest.approx(0.2, rel=1e-6)   # log-log: 0.1 * 4^0.5
    assert prepare(TOY).attention_compute_efficiency(2048, 128) == TOY.efficiency.attention_compute   # no curve


def test_short_prefill_attention_costs_at_least_the_shortest_measured_call():
    """Below the shortest measured prefill the attention call costs what that one did (launch latency, not the
    quadratic work); above it the curve prices it as before."""
    curves = {"128": [{"x": 128, "y": 0.01}, {"x": 8192, "y": 0.4}]}
    h = prepare(TOY.model_copy(update={"efficiency": TOY.efficiency.model_copy(
        update={"attention_compute_by_len": Efficiency(attention_compute_by_len=curves).attention_compute_by_len})}))
    m = catalog.load_model("llama-8b")             # 32 heads of 128
    d = Deployment(m, piecewise_sizes=())

    def attn_s(tokens):
        return {o.name: o for o in step_ops(h, d, Batch.of([(tokens, 0)]))}["attention_prefill"].time_s
    at_128 = 2 * 32 * 256 * 128 ** 2 / 2 / (1e15 * 0.01)         # the profiler's FLOPs at 128 tokens
    assert h.attention_shortest_len(128) == pytest.approx(128)
    assert attn_s(128) == pytest.approx(at_128, rel=0.01)
    assert attn_s(16) == pytest.approx(at_128, rel=1e-6)
    assert attn_s(1024) > at_128
    assert prepare(TOY).attention_shortest_len(128) == 0.0


def test_prefill_steps_price_their_activation_copies():
    """A varlen prefill copies the attention output (tokens x q width, read and write); under piecewise graphs
    each layer's qkv output is also copied into the static buffer, at the bucket's token count."""
    m = catalog.load_model("llama-8b")
    h = prepare(TOY)
    ops = {o.name: o for o in step_ops(h, Deployment(m, varlen_prefill=True, whole_graph_prefill=False),
                                       Batch.of([(100, 0)]))}
    assert ops["attention_out_copy"].bytes == 2 * 100 * 4096 * 2
    assert ops["piece_copy"].bytes == 2 * 128 * (4096 + 2 * 1024) * 2
    assert ops["piece_copy"].count == 32
    eager = {o.name for o in step_ops(h, Deployment(m, piecewise_sizes=()), Batch.of([(100, 0)]))}
    assert "piece_copy" not in eager and "attention_out_copy" in eager
    per_seq = {o.name for o in step_ops(h, Deployment(m, piecewise_sizes=(), varlen_prefill=False),
                                        Batch.of([(100, 0)]))}
    assert not per_seq & {"piece_copy", "attention_out_copy"}       # engines before varlen prefill
    decode = {o.name for o in step_ops(h, Deployment(m, varlen_prefill=True), Batch.of([], [1000] * 8))}
    assert not decode & {"piece_copy", "attention_out_copy"}


def test_decode_attention_bandwidth_by_head_size():
    """The measured factor of the nearest head size scales the decode-attention bandwidth; none: the scalar."""
    eff = TOY.efficiency.model_copy(update={"attention_memory": 0.9,
                                            "attention_memory_by_head_dim": {"64": 0.8, "128": 1.0}})
    h = prepare(TOY.model_copy(update={"efficiency": eff}))
    assert h.attention_memory_efficiency(64) == pytest.approx(0.72)
    assert h.attention_memory_efficiency(128) == pytest.approx(0.9)
    assert h.attention_memory_efficiency(256) == pytest.approx(0.9)
    assert prepare(TOY).attention_memory_efficiency(64) == TOY.efficiency.attention_memory
    small = catalog.load_model("llama-1b")
    b = Batch(decode_seqs=64, decode_ctx_tokens=64 * 4096)
    t = {hw.name: {o.name: o for o in step_ops(hw, Deployment(small), b)}["attention_decode"].time_s
         for hw in (h, prepare(TOY.model_copy(update={"name": "flat", "efficiency": eff.model_copy(
             update={"attention_memory_by_head_dim": {}})})))}
    assert t["TOY"] == pytest.approx(t["flat"] / 0.8, rel=1e-3)


def test_served_steps_pay_the_servers_per_sequence_work():
    eff = TOY.efficiency.model_copy(update={"served_per_seq_overhead_s": 1e-5})
    h = prepare(TOY.model_copy(update={"efficiency": eff}))
    m = catalog.load_model("llama-8b")
    b = Batch.of([], [1000] * 40)
    served, offline = step_time_s(h, Deployment(m), b), step_time_s(h, Deployment(m, served=False), b)
    assert served - offline == pytest.approx(40 * 1e-5)


def test_async_scheduling_hides_its_calibrated_share_of_host_work():
    """Synchronous steps add host work to the GPU's; async ones hide `async_hidden_fraction` of it (none by
    default: measured served async steps took as long as synchronous ones), and a host-bound step takes its host
    time either way."""
    from dataclasses import replace

    m = catalog.load_model("llama-8b")
    d = Deployment(m, async_scheduling=True)
    b = Batch.of([], [1000] * 8)
    times = {}
    for f in (0.0, 0.4, 1.0):
        h = prepare(TOY.model_copy(update={"efficiency": TOY.efficiency.model_copy(
            update={"async_hidden_fraction": f, "step_overhead_s": 1e-3})}))
        times[f] = step_time_s(h, d, b)
        sync = step_time_s(h, replace(d, async_scheduling=False), b)
    host = 1e-3 + 8 * TOY.efficiency.per_seq_overhead_s
    assert times[0.0] == pytest.approx(sync)
    assert times[0.0] - times[0.4] == pytest.approx(0.4 * host)
    assert times[1.0] == pytest.approx(sync - host)
    slow_host = prepare(TOY.model_copy(update={"efficiency": TOY.efficiency.model_copy(
        update={"async_hidden_fraction": 1.0, "step_overhead_s": 1.0})}))
    assert step_time_s(slow_host, d, b) == pytest.approx(1.0 + 8 * TOY.efficiency.per_seq_overhead_s)


def test_fp8_rows_priced_as_the_faster_path_when_the_engine_tunes_them():
    """At 2-16 rows an engine that times both fp8 paths per shape runs the faster: a tuned deployment is never
    priced slower than one that always takes the weight-only GEMV, and one row is the GEMV either way."""
    from dataclasses import replace

    from planner.catalog import load_hardware, load_model
    from planner.costmodel import Batch, Deployment, step_time_s

    hw = load_hardware("h200", "measured")
    tuned = Deployment(load_model("llama-70b"), weight_dtype="fp8")
    gemv_only = replace(tuned, fp8_rows_tuned=False)
    eight, one = Batch.of(decode_contexts=[1024] * 8), Batch.of(decode_contexts=[1024])
    assert step_time_s(hw, tuned, eight) < step_time_s(hw, gemv_only, eight)
    assert step_time_s(hw, tuned, one) == step_time_s(hw, gemv_only, one)


def test_engine_report_says_whether_fp8_rows_are_tuned():
    from planner.predict import engine_features

    assert engine_features({"fp8_gemv_rows": None})["fp8_rows_tuned"]
    assert not engine_features({"varlen_prefill": True})["fp8_rows_tuned"]
    assert engine_features({"fp8_gemv_rows": {"8x4": [2, 16]}})["fp8_gemv_choices"] == {
        (8, 4, 2, True), (8, 4, 4, False), (8, 4, 8, False), (8, 4, 16, True)}


def test_norms_folded_into_the_gemvs_where_the_engine_reported_it():
    """Decode steps at a row count the engine reported folding its RMSNorms at (`fused_norms`) lose the norms'
    kernel a layer; other row counts, prefills and engines that reported nothing are priced as before."""
    from dataclasses import replace

    from planner.catalog import load_hardware, load_model
    from planner.costmodel import Batch, Deployment, prepare, step_ops, step_time_s
    from planner.predict import engine_features

    report = {"fused_norms": {"1": {"folded": True}, "8": {"folded": False}, "16": {"folded": True}}}
    assert engine_features(report)["folded_norm_rows"] == {1, 16}
    assert engine_features({})["folded_norm_rows"] == frozenset()
    hw = load_hardware("h200", "measured")
    d = Deployment(load_model("llama-3.1-8b"))
    folded = replace(d, folded_norm_rows=engine_features(report)["folded_norm_rows"])
    one, eight, prompt = (Batch.of(decode_contexts=[1024]), Batch.of(decode_contexts=[1024] * 8),
                          Batch.of(prefills=[(16, 0)]))
    norm_s = next(op for op in step_ops(hw, d, one) if op.name == "norms")
    assert "norms" not in {op.name for op in step_ops(hw, folded, one)}
    # the norms' op and the second norm kernel, which is not priced on its own (a launch, as unpriced kernels are)
    saved_s = step_time_s(hw, d, one) - step_time_s(hw, folded, one)
    assert saved_s == pytest.approx(norm_s.count * (norm_s.time_s + prepare(hw).e.graph_kernel_overhead_s))
    assert step_time_s(hw, folded, eight) == step_time_s(hw, d, eight)
    assert step_time_s(hw, folded, prompt) == step_time_s(hw, d, prompt)


def test_fp8_rows_priced_on_the_path_the_engine_reported():
    """Where the engine reported its choice for a shape and row bucket, that path is priced, whichever this model
    thinks faster; shapes it did not report keep the faster of the two."""
    from dataclasses import replace

    from planner.catalog import load_hardware, load_model
    from planner.costmodel import Batch, Deployment, step_time_s
    from planner.predict import fp8_gemv_choices

    hw = load_hardware("h200", "measured")
    model = load_model("llama-70b")
    d = Deployment(model, weight_dtype="fp8")
    q = model.num_attention_heads * model.head_dim
    shapes = {"qkv": (q + 2 * model.num_kv_heads * model.head_dim, model.hidden_size),
              "o": (model.hidden_size, q), "gate_up": (2 * model.intermediate_size, model.hidden_size),
              "down": (model.hidden_size, model.intermediate_size)}
    eight = Batch.of(decode_contexts=[1024] * 8)

    def reported(won: bool) -> Deployment:
        return replace(d, fp8_gemv_choices=fp8_gemv_choices({f"{n}x{k}": [2, 4, 8, 16] if won else []
                                                              for n, k in shapes.values()}))
    gemv, gemm, either = (step_time_s(hw, reported(True), eight), step_time_s(hw, reported(False), eight),
                          step_time_s(hw, d, eight))
    assert either <= min(gemv, gemm) * (1 + 1e-12)      # the faster path shape by shape
    assert gemv != gemm
    assert step_time_s(hw, replace(d, fp8_rows_tuned=False), eight) == pytest.approx(gemv)
    one = Batch.of(decode_contexts=[1024])        # one row: the GEMV whatever was reported
    assert step_time_s(hw, reported(False), one) == step_time_s(hw, d, one)


def test_fresh_prompts_replay_one_whole_graph():
    """Up to WHOLE_GRAPH_PREFILLS fresh prompts within the buckets run as one graph: no eager issue, however slow
    the host's launches, and the bucket's padding rows attend as one more prompt. A cached prefix or one prompt
    too many leaves the step piecewise, issued layer by layer."""
    from dataclasses import replace

    from planner.costmodel import (PIECEWISE_TOKEN_SIZES, WHOLE_GRAPH_MAX_TOKENS, WHOLE_GRAPH_PREFILLS, step_time_s,
                                   whole_graph)
    m = catalog.load_model("llama-8b")
    slow_host = TOY.model_copy(update={"efficiency": TOY.efficiency.model_copy(update={"kernel_overhead_s": 1e-3})})
    d, piecewise = Deployment(m), Deployment(m, whole_graph_prefill=False)
    fresh = Batch.of([(100, 0)])
    assert whole_graph(d, fresh) and not whole_graph(piecewise, fresh)
    assert step_time_s(slow_host, d, fresh) < step_time_s(slow_host, piecewise, fresh) - 0.03   # 32+ launches at 1 ms
    attn = {o.name: o for o in step_ops(prepare(TOY), d, fresh)}
    alone = {o.name: o for o in step_ops(prepare(TOY), piecewise, fresh)}
    assert attn["attention_out_copy"].bytes == 2 * 128 * 4096 * 2
    assert attn["attention_prefill"].flops > alone["attention_prefill"].flops
    for b in (Batch.of([(100, 50)]), Batch.of([(20, 0)] * (WHOLE_GRAPH_PREFILLS + 1)),
              Batch.of([(PIECEWISE_TOKEN_SIZES[-1] + 1, 0)]), Batch.of([(WHOLE_GRAPH_MAX_TOKENS + 1, 0)])):
        assert not whole_graph(d, b)
    # decodes beside fresh prompts: one graph on engines that capture it (their rows attend as the padding prompt,
    # then the decode kernel's), piecewise on older ones
    mixed = Batch.of([(100, 0)], [1000] * 16)
    older = replace(d, whole_graph_mixed=False)
    assert whole_graph(d, mixed) and not whole_graph(older, mixed)
    assert step_time_s(slow_host, d, mixed) < step_time_s(slow_host, older, mixed) - 0.03
    ops = {o.name: o for o in step_ops(prepare(TOY), d, mixed)}
    assert ops["attention_decode"].bytes > 0 and ops["attention_prefill"].flops == attn["attention_prefill"].flops


def test_one_row_fp8_gemv_priced_from_the_measured_curve():
    """Where the profile has the one-row GEMV by bytes, a measured layer costs what it measured (latency
    included); without it, latency + bytes at the fitted fraction."""
    from planner.costmodel import fp8_gemv_bytes
    from planner.schemas import CurvePoint
    small, big = fp8_gemv_bytes(1, 4096, 4096), fp8_gemv_bytes(1, 57344, 8192)
    curve = [CurvePoint(x=small, y=0.5), CurvePoint(x=big, y=0.9)]
    hw = TOY.model_copy(update={"efficiency": TOY.efficiency.model_copy(update={"fp8_gemv_by_bytes": curve})})
    bw = TOY.memory_bandwidth_bytes_per_s
    assert gemm_cost(prepare(hw), "o", 1, 4096, 4096, "fp8").time_s == pytest.approx(small / (bw * 0.5))
    assert gemm_cost(prepare(hw), "gate_up", 1, 57344, 8192, "fp8").time_s == pytest.approx(big / (bw * 0.9))
    e = TOY.efficiency
    assert gemm_cost(prepare(TOY), "o", 1, 4096, 4096, "fp8").time_s == pytest.approx(
        max(e.fp8_gemv_latency_s + small / (bw * e.fp8_gemv_memory), e.graph_kernel_overhead_s))


def test_buckets_above_2048_kept_as_the_engine_race_would():
    """Above the piecewise buckets a deployment priced for planning keeps the larger buckets in turn while a
    prompt one token above the previous is faster on them than eager: a slow host keeps some for a small model
    (its eager step is launch bound), a fast one none; an engine's own report races nothing here."""
    from dataclasses import replace

    from planner.catalog import load_hardware, load_model
    from planner.costmodel import PIECEWISE_TOKEN_SIZES, raced_buckets, step_time_s
    from planner.predict import engine_features

    measured = load_hardware("h200", "measured")
    e = measured.efficiency
    slow = measured.model_copy(update={"efficiency": e.model_copy(update={"kernel_overhead_s": 80e-6})})
    fast = measured.model_copy(update={"efficiency": e.model_copy(update={"kernel_overhead_s": 1e-6})})
    small = Deployment(load_model("Llama-3.2-1B"), weight_dtype="fp8")
    kept = raced_buckets(slow, small).piecewise_sizes
    assert kept[:len(PIECEWISE_TOKEN_SIZES)] == PIECEWISE_TOKEN_SIZES and kept[len(PIECEWISE_TOKEN_SIZES)] == 2304
    assert raced_buckets(fast, small).piecewise_sizes == PIECEWISE_TOKEN_SIZES
    step = Batch.of([(2048, 0)], [2048] * 8)
    eager = replace(small, raced_sizes=())
    assert step_time_s(slow, small, step) < 0.8 * step_time_s(slow, eager, step)
    assert step_time_s(fast, small, step) == step_time_s(fast, eager, step)
    reported = replace(small, **engine_features({"piecewise_sizes": list(PIECEWISE_TOKEN_SIZES)}))
    assert raced_buckets(slow, reported).piecewise_sizes == PIECEWISE_TOKEN_SIZES


def test_a_replica_that_keeps_up_serves_the_rate_and_more_replicas_never_serve_less():
    """At a rate the served tokens are the rate's while the replicas keep up, else their capacity. The operating
    point's B / TPOT is not that figure: Gemma-2-27B fp8 on 4 x TP2 H100s stopped its fixed point just past a graph
    bucket and served 87% of a rate that 3 replicas carried in full (and cost per token rose with it)."""
    from planner import api
    from planner.predict import predict
    from planner.schemas import Plan

    model, hw = catalog.load_model("gemma2-27b"), catalog.load_hardware("h100")
    wl = api.workload(rate_rps=50)
    served = []
    for replicas in (1, 2, 3, 4, 8):
        pred = predict(model, hw, Plan(model=model.name, hardware=hw.name, tp=2, num_gpus=2 * replicas,
                                       replicas=replicas, weight_dtype="fp8", kv_dtype="fp8"), wl)
        capacity = pred.requests_per_s * 256
        assert pred.throughput_tok_s == pytest.approx(min(capacity, 50 * 256))
        assert pred.cost_per_million_tokens == pytest.approx(pred.cost_per_hour / (pred.throughput_tok_s * 3600) * 1e6)
        served.append(pred.throughput_tok_s)
    assert served == sorted(served) and served[-1] == pytest.approx(50 * 256)


def test_the_operating_point_at_a_rate_implies_its_own_concurrency():
    """Little's law at the B the prediction prices: B = rate x E2E(B). Graph padding makes E2E jump at a bucket, and
    a solve that stopped on a small step reported Llama-3.1-70B fp8 on 8 A100s at 90% load at B 51.5 (padded to the
    64 graph, whose E2E implies B 72.8): TPOT and TTFT priced at a concurrency the rate does not give."""
    from planner.costmodel import prepare
    from planner.predict import deployment_of, max_batch, solve_rate, steady_state
    from planner.schemas import Plan

    model, hw = catalog.load_model("llama-70b"), prepare(catalog.load_hardware("a100"))
    plan = Plan(model=model.name, hardware=hw.name, tp=8, num_gpus=8, weight_dtype="fp8", kv_dtype="fp8",
                max_num_seqs=256, max_num_batched_tokens=8192)
    d = deployment_of(model, plan)
    mem = memory_breakdown(hw.profile, d, 8192, 256, 0.9, 1280, 16)
    full = steady_state(hw, d, plan, max_batch(mem, plan), 1024, 256)
    rate = 0.9 * full.output_tok_s / 256
    op = solve_rate(hw, d, plan, rate, 1024, 256, full)
    assert op.batch == pytest.approx(rate * (op.ttft_s + 255 * op.step_s), rel=0.01)
