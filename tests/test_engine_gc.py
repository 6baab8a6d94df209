"""Garbage collection in the serving process: the clock the step trace reads, and the start-up freeze."""
import gc

from backends.engine.gc_clock import GcClock, freeze_startup


def test_clock_counts_collections_and_resets():
    clock = GcClock()
    try:
        junk = [[i] for i in range(200_000)]       # tracked objects, so a full collection has work to do
        gc.collect()
        first = clock.take()
        assert first > 0
        assert clock.take() == 0.0
        del junk
    finally:
        clock.close()
    gc.collect()
    assert clock.take() == 0.0                    # closed: no longer listening


def test_freeze_leaves_full_collections_little_to_scan():
    keep = [[i] for i in range(200_000)]          # what start-up built: alive for the whole process
    try:
        freeze_startup()
        assert gc.get_freeze_count() >= len(keep)
        clock = GcClock()
        gc.collect()
        frozen_s = clock.take()
        gc.unfreeze()
        gc.collect()
        scanned_s = clock.take()
        clock.close()
        assert frozen_s < scanned_s
    finally:
        gc.unfreeze()
