"""What the engine launches at which size: its decode graph batch sizes (and what the cost model assumes of traces
that do not list them), and the decode-attention split count per batch."""
import pytest

torch = pytest.importorskip("torch")


def test_graph_batch_sizes():
    from backends.engine.model_runner import graph_batch_sizes

    assert graph_batch_sizes(1) == [1]
    assert graph_batch_sizes(40) == [1, 2, 4, 8, 16, 24, 32, 48]
    assert graph_batch_sizes(256) == [1, 2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256]
    assert graph_batch_sizes(10_000)[-4:] == [320, 384, 448, 512]
    # from 64 rows on, sizes at most 25% apart (65 decodes ran the 128 graph before)
    sizes = graph_batch_sizes(512)
    assert all(b / a <= 1.25 for a, b in zip(sizes, sizes[1:]) if a >= 64)


def test_traces_without_graph_sizes_priced_at_powers_of_two():
    """Engines before 2026-12-03 captured power-of-two graphs and did not report them; a trace of theirs must be
    priced with those (65 decodes padded to 128), a current engine's report with what it lists."""
    from dataclasses import replace

    from planner.catalog import load_model
    from planner.costmodel import Deployment, padded_batch
    from planner.predict import engine_features

    d = Deployment(load_model("llama-8b"))
    old = engine_features({})
    new = engine_features({"cuda_graph_batch_sizes": [1, 2, 4, 8, 16, 24, 32, 48, 64, 80, 96, 112, 128]})
    assert padded_batch(replace(d, **old), 65) == 128
    assert padded_batch(replace(d, **new), 65) == 80
    assert padded_batch(d, 65) == 80          # planner predictions: the current engine


def test_decode_splits_fill_waves_of_programs(monkeypatch):
    """Within one wave (4 programs per SM) as many splits as fill the SMs; past it, two where one split each would
    leave the last wave mostly empty (H200, 132 SMs, 8 KV heads: 67-99 and 133-165 sequences)."""
    from backends.engine import attention

    monkeypatch.setattr(attention, "_num_sms", lambda device: 132)
    cuda = torch.device("cuda")
    splits = {b: attention.decode_num_splits(b, 8, cuda) for b in (1, 8, 16, 32, 48, 64, 66, 67, 80, 99, 100, 128,
                                                                      144, 192, 224, 256)}
    assert splits == {1: 16, 8: 8, 16: 4, 32: 2, 48: 1, 64: 1, 66: 1, 67: 2, 80: 2, 99: 2, 100: 1, 128: 1, 144: 2,
                      192: 1, 224: 2, 256: 1}
    assert attention.decode_num_splits(80, 8, torch.device("cpu")) == 1
    monkeypatch.setattr(attention, "MAX_DECODE_SPLITS", 1)
    assert attention.decode_num_splits(80, 8, cuda) == attention.decode_num_splits(8, 8, cuda) == 1
