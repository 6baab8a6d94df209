"""Python garbage collection in a serving process: freeze what start-up built, and time what is left.

A full (generation 2) collection scans every tracked object. After start-up that is the model, its graphs
and the libraries' own objects, none of which is ever garbage, so a full collection mid-serving takes
long while it holds the GIL, and every request in flight stalls with it. `freeze_startup()` moves those objects
to the permanent generation, so collections scan only what serving creates. `GcClock` measures the time
collections take (any thread: a collection holds the GIL, so it stalls the engine thread too), which the
step trace records.
"""
from __future__ import annotations

import gc
import time


def freeze_startup() -> None:
    """Collect once, then exempt every surviving object from future collections."""
    gc.collect()
    gc.freeze()


class GcClock:
    """Seconds spent in garbage collection since the last `take()`, by any thread of this process."""

    def __init__(self):
        self._seconds = 0.0
        self._started: float | None = None
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self._seconds += time.perf_counter() - self._started
            self._started = None

    def take(self) -> float:
        s, self._seconds = self._seconds, 0.0
        return s

    def close(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
