"""Tensor-parallel worker processes: start ranks 1..N-1, watch them, stop them; nothing outlives rank 0.

Rank 0 is the serving process itself. Each worker asks the kernel to SIGKILL it when its parent dies (so a
crashed or killed rank 0 leaves no orphan blocked in a collective) and ignores Ctrl-C (rank 0 decides when
everyone stops). Rank 0 polls its workers; if one exits unexpectedly, it prints one line, kills the rest and
exits: a dead peer would otherwise leave it hung in the next all-reduce.
"""
from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import socket
import sys
import threading
import time

from . import parallel
from .config import EngineConfig

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):     # not Linux: the watchdog thread below still covers it
        pass
    if os.getppid() != parent_pid:        # the parent died before prctl took effect
        os._exit(1)

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def _worker_main(config: EngineConfig, rank: int, port: int, parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from .model_runner import ModelRunner  # torch and the model after the safety nets are up
    from .gc_clock import freeze_startup
    runner = ModelRunner(config, rank, port)
    freeze_startup()
    runner.worker_loop()
    parallel.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Workers:
    def __init__(self, config: EngineConfig):
        os.environ.update(parallel.SAFE_ENV)   # inherited by the spawned ranks, and used by rank 0
        self.port = _free_port()
        self.stopping = False      # set before rank 0 broadcasts the shutdown: exits from then on are expected
        ctx = mp.get_context("spawn")          # CUDA cannot be used in a forked child
        self.procs = [ctx.Process(target=_worker_main, args=(config, rank, self.port, os.getpid()),
                                  name=f"tp-rank-{rank}", daemon=True) for rank in range(1, config.tp)]
        for p in self.procs:
            p.start()
        self.pids = [p.pid for p in self.procs]
        threading.Thread(target=self._watch, daemon=True, name="tp-watchdog").start()

    def _watch(self) -> None:
        while not self.stopping:
            for rank, p in enumerate(self.procs, start=1):
                if p.exitcode is not None and not self.stopping:
                    print(f"error: tensor-parallel rank {rank} exited (code {p.exitcode}); stopping the server",
                          file=sys.stderr, flush=True)
                    self.kill()
                    os._exit(1)
            time.sleep(0.2)

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()

    def stop(self, timeout: float = 10.0) -> None:
        """After rank 0 broadcast the shutdown (with `stopping` set): let workers exit, kill any that do not."""
        self.stopping = True
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        self.kill()
