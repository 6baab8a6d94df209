"""Async scheduling (step n+1 launched before step n's tokens are read): the same tokens as the synchronous
engine in every situation the scheduler meets, on a tiny random model (CPU runs the same code path)."""
import pytest

torch = pytest.importorskip("torch")

from backends.engine.config import TINY, EngineConfig, EngineError, SamplingParams
from backends.engine.engine import PENDING_TOKEN, LLMEngine

pytestmark = pytest.mark.usefixtures("one_thread")


def make_engine(async_scheduling: bool, **kw) -> LLMEngine:
    cfg = dict(model=TINY, device="cpu", dtype="fp32", num_kv_blocks=64, max_model_len=256, seed=0)
    return LLMEngine(EngineConfig(**{**cfg, **kw}, async_scheduling=async_scheduling))


def prompts(n, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, TINY.vocab_size, (length + 3 * i,), generator=g).tolist() for i in range(n)]


def both(params, ps, **kw):
    return [make_engine(a, **kw).generate(ps, params) for a in (False, True)]


def test_greedy_tokens_match_with_chunked_prefill_and_mixed_steps():
    ps = prompts(12, 20)
    params = [SamplingParams(max_tokens=1 + 3 * i, ignore_eos=True) for i in range(12)]
    kw = dict(max_num_seqs=6, max_num_batched_tokens=48)
    sync = make_engine(False, **kw).generate(ps, params)
    engine = make_engine(True, **kw)
    fed = []
    launch = engine.runner.launch
    engine.runner.launch = lambda batch, feed=None: (fed.append(len(feed or ())), launch(batch, feed))[1]
    overlapped = engine.generate(ps, params)
    assert sum(fed) > 50           # decode inputs really came from the device, not from the host's lists
    assert overlapped == sync
    assert [len(o) for o in overlapped] == [p.max_tokens for p in params]


def test_preemption_under_overload_loses_nothing():
    ps = prompts(16, 30)
    params = SamplingParams(max_tokens=30, ignore_eos=True)
    engine = make_engine(True, num_kv_blocks=14, max_num_seqs=8, max_num_batched_tokens=64)
    out = engine.generate(ps, params)
    assert engine.scheduler.num_preemptions > 0
    assert out == make_engine(False, num_kv_blocks=256, max_num_seqs=32).generate(ps, params)
    assert engine.block_manager.num_free_blocks == 14 and not engine.has_unfinished()
    assert all(PENDING_TOKEN not in s.token_ids for s in engine.seqs.values())


def test_eos_mid_flight_drops_the_step_after_it():
    """A sequence that stops on EOS was already launched into the next step: that token is dropped and the
    output ends at the EOS, as without overlap."""
    ps = prompts(3, 10)
    probe = make_engine(False).generate(ps, SamplingParams(max_tokens=8, ignore_eos=True))
    eos = probe[0][3]
    sync, overlapped = (make_engine(a) for a in (False, True))
    for e in (sync, overlapped):
        e.eos_token_ids = {eos}
    params = SamplingParams(max_tokens=8)
    a, b = sync.generate(ps, params), overlapped.generate(ps, params)
    assert a == b and b[0][-1] == eos and len(b[0]) <= 4
    assert overlapped.block_manager.num_free_blocks == 64


def test_seeded_sampling_and_abort():
    ps = prompts(4, 12)
    seeded = SamplingParams(max_tokens=10, temperature=1.0, seed=7, ignore_eos=True)
    sync, overlapped = both(seeded, ps)
    assert overlapped == sync
    engine = make_engine(True, num_kv_blocks=32)
    ids = [engine.add_request(p, SamplingParams(max_tokens=100, ignore_eos=True)) for p in ps[:3]]
    received = {i: 0 for i in ids}
    for _ in range(4):
        for o in engine.step():
            received[o.request_id] += len(o.new_token_ids)
    engine.abort_request(ids[1])
    done = {}
    for _ in range(3):
        for o in engine.step():
            received[o.request_id] += len(o.new_token_ids)
            done.setdefault(o.request_id, o)
    # the token in flight when the abort came is dropped, and not counted
    assert done[ids[1]].finish_reason == "abort" and done[ids[1]].num_output_tokens == received[ids[1]]
    for i in (ids[0], ids[2]):
        engine.abort_request(i)
    while engine.has_unfinished():
        engine.step()
    assert engine.block_manager.num_free_blocks == 32


def test_async_needs_one_process():
    with pytest.raises(EngineError, match="--tp 1"):
        EngineConfig(model=TINY, device="cpu", tp=2, async_scheduling=True)
