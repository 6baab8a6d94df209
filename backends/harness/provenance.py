"""What a run was measured with: versions, git revision, GPU."""
from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, cwd=_REPO, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_revision() -> str | None:
    rev = _run(["git", "rev-parse", "--short=12", "HEAD"])
    if rev and _run(["git", "status", "--porcelain", "--untracked-files=no"]):
        rev += "+dirty"
    return rev


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    return "; ".join(sorted(set(out.splitlines()))) if out else None


def versions(server_version: str | None = None) -> dict:
    found = {"python": sys.version.split()[0], "platform": platform.platform(), "server": server_version}
    for dist in ("llm-deploy-planner", "numpy", "uvloop"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found
