"""A server started as a subprocess: free port, wait for health, clear errors, stop it and its children."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from planner.errors import PlanError

_LOG_TAIL_LINES = 15
_POLL_S = 0.5


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ManagedServer:
    """A server process in its own session, so stopping it stops everything it spawned."""

    def __init__(self, cmd: list[str], base_url: str, *, log_path: Path, env: dict[str, str] | None = None,
                 name: str = "server"):
        self.cmd = cmd
        self.base_url = base_url
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})}, start_new_session=True)

    def gone(self) -> str | None:
        """None while the process runs, else why it is not running (for the run's watchdog)."""
        code = self.proc.poll()
        return None if code is None else f"{self.name} exited with code {code}"

    def wait_healthy(self, timeout_s: float, path: str = "/health") -> float:
        """Seconds until GET path answered 200. Raises PlanError naming the cause and the log's tail."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise PlanError(f"{self.name} exited with code {self.proc.returncode} before it was ready; "
                                f"log {self.log_path}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base_url + path, timeout=2) as resp:
                    if resp.status == 200:
                        return time.monotonic() - t0
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(_POLL_S)
        self.stop()
        raise PlanError(f"{self.name} not healthy after {timeout_s:g} s (raise --startup-timeout?); "
                        f"log {self.log_path}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-_LOG_TAIL_LINES:])

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after the grace period."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        # Children may outlive the leader (workers): the group gets SIGKILL regardless.
        self._signal_group(signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(5)
        self._log.close()

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
