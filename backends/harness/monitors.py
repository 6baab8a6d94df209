"""Client-side health during a run: event-loop lag and the client's CPU use.

Both say whether the client, not the server, limited what was measured.
"""
from __future__ import annotations

import asyncio
import time
from time import perf_counter

_TICK_S = 0.005


class LoopLagMonitor:
    """Sleeps a short tick over and over; how late each wake-up is, is the loop's lag.

    A busy single-threaded client shows up here before anywhere else: every time stamp it takes is
    late by up to this much.
    """

    def __init__(self):
        self.lags_s: list[float] = []
        self._task: asyncio.Task | None = None
        self._cpu0 = 0.0
        self._wall0 = 0.0
        self.cpu_s = 0.0
        self.wall_s = 0.0

    def start(self) -> None:
        self._cpu0, self._wall0 = time.process_time(), perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            t = perf_counter()
            await asyncio.sleep(_TICK_S)
            # Timers may fire up to a millisecond early (uvloop rounds to ms): a negative lag is no lag.
            self.lags_s.append(max(perf_counter() - t - _TICK_S, 0.0))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
            self.cpu_s = time.process_time() - self._cpu0
            self.wall_s = perf_counter() - self._wall0

    @property
    def cpu_fraction(self) -> float:
        """Client CPU time over wall time: near 1.0 means the (single-threaded) client was saturated."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0
