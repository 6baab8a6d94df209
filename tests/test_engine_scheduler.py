"""Scheduler behaviour of the built-in engine on a tiny random model (CPU)."""
import json

import pytest

torch = pytest.importorskip("torch")

from backends.engine.config import TINY, EngineConfig, EngineError, SamplingParams
from backends.engine.engine import LLMEngine


pytestmark = pytest.mark.usefixtures("one_thread")


def make_engine(**kw) -> LLMEngine:
    cfg = dict(model=TINY, device="cpu", dtype="fp32", num_kv_blocks=64, max_model_len=256, seed=0)
    return LLMEngine(EngineConfig(**{**cfg, **kw}))


def random_prompts(n, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, TINY.vocab_size, (length + i % 5,), generator=g).tolist() for i in range(n)]


def test_overload_completes_every_request_with_preemption(tmp_path):
    """24 requests needing ~5 blocks each, a 16-block cache: every one completes with exactly max_tokens."""
    prompts = random_prompts(24, 30)
    params = SamplingParams(max_tokens=40, ignore_eos=True)
    trace = tmp_path / "trace.jsonl"
    engine = make_engine(num_kv_blocks=16, max_num_seqs=8, max_num_batched_tokens=64, trace_path=str(trace))
    budget_ok = []
    schedule = engine.scheduler.schedule

    def checked():
        batch = schedule()
        budget_ok.append(batch.num_tokens <= 64 and len(engine.scheduler.running) <= 8)
        return batch
    engine.scheduler.schedule = checked
    outs = engine.generate(prompts, params)
    assert [len(o) for o in outs] == [40] * 24
    assert all(budget_ok)
    assert engine.scheduler.num_preemptions > 0
    assert engine.block_manager.num_free_blocks == 16 and not engine.scheduler.has_work()
    # Recompute after preemption is exact: the same tokens as with a roomy cache.
    assert outs == make_engine(num_kv_blocks=256, max_num_seqs=32).generate(prompts, params)
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert sum(r["num_preempted"] for r in records) == engine.scheduler.num_preemptions
    assert any(r["num_prefill_seqs"] and r["num_decode_seqs"] for r in records)   # mixed steps happen
    r = records[-1]
    assert {"time_s", "num_prefill_tokens", "prefill_context_lens", "decode_context_len_sum",
            "decode_context_len_max", "gc_s"} <= set(r)
    # every request's arrival is in the trace once, in the engine's clock, before the step that took it in
    arrivals = [(a, rec["start_s"]) for rec in records for a in rec["arrivals_s"]]
    assert len(arrivals) == 24 and all(a <= start for a, start in arrivals)


def test_cancel_frees_blocks():
    engine = make_engine(num_kv_blocks=32)
    ids = [engine.add_request(p, SamplingParams(max_tokens=100, ignore_eos=True)) for p in random_prompts(3, 20)]
    for _ in range(3):
        engine.step()
    assert engine.block_manager.num_free_blocks < 32
    engine.abort_request(ids[1])
    outs = engine.step()
    aborted = [o for o in outs if o.request_id == ids[1]]
    assert aborted and aborted[0].finished and aborted[0].finish_reason == "abort"
    assert all(s.request_id != ids[1] for s in engine.scheduler.running)
    for i in (ids[0], ids[2]):
        engine.abort_request(i)
    engine.step()
    assert engine.block_manager.num_free_blocks == 32 and not engine.has_unfinished()


def test_cancel_waiting_request():
    engine = make_engine(max_num_seqs=1)
    a = engine.add_request([1, 2, 3], SamplingParams(max_tokens=5, ignore_eos=True))
    b = engine.add_request([4, 5, 6], SamplingParams(max_tokens=5, ignore_eos=True))
    engine.step()
    engine.abort_request(b)
    produced = {}
    while engine.has_unfinished():
        for o in engine.step():
            produced[o.request_id] = o
    assert produced[a].num_output_tokens == 5 and produced[b].finish_reason == "abort"


def test_rejects_what_cannot_fit():
    engine = make_engine(num_kv_blocks=4)        # 64 tokens
    assert engine.max_model_len == 64
    with pytest.raises(EngineError, match="maximum model length"):
        engine.add_request(list(range(60)), SamplingParams(max_tokens=10))
    with pytest.raises(EngineError, match="token ids"):
        engine.add_request([TINY.vocab_size], SamplingParams(max_tokens=1))
    with pytest.raises(EngineError):
        SamplingParams(max_tokens=0)


def test_eos_stops_unless_ignored():
    engine = make_engine()
    prompt = random_prompts(1, 10)[0]
    first = engine.generate([prompt], SamplingParams(max_tokens=1))[0][0]
    engine.eos_token_ids = {first}
    assert engine.generate([prompt], SamplingParams(max_tokens=5)) == [[first]]
    assert len(engine.generate([prompt], SamplingParams(max_tokens=5, ignore_eos=True))[0]) == 5


def test_seeded_sampling_is_reproducible_across_batches():
    engine = make_engine()
    prompts = random_prompts(4, 12)
    seeded = SamplingParams(max_tokens=10, temperature=1.0, seed=1234, ignore_eos=True)
    alone = engine.generate([prompts[0]], seeded)[0]
    mixed = engine.generate(prompts, [seeded, SamplingParams(max_tokens=7, temperature=0.8, ignore_eos=True),
                                      SamplingParams(max_tokens=10, ignore_eos=True), seeded])
    assert mixed[0] == alone and len(mixed[1]) == 7
    other = engine.generate([prompts[0]], SamplingParams(max_tokens=10, temperature=1.0, seed=99, ignore_eos=True))
    assert other[0] != alone
    greedy = engine.generate([prompts[0]], SamplingParams(max_tokens=10, ignore_eos=True))[0]
    assert greedy == engine.generate([prompts[0]], SamplingParams(max_tokens=10, ignore_eos=True))[0]
