"""Where a number came from: versions, machine, git state, time."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench.config import checkout_root


def bench_version() -> str:
    """The installed bench's version ("0.0.0+unknown" in a source tree never installed)."""
    try:
        return version("bench")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def now() -> str:
    """The current time in ISO 8601 with the UTC offset."""
    return dt.datetime.now(dt.UTC).astimezone().isoformat(timespec="seconds")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_state(root: Path | None = None) -> dict[str, Any]:
    """Commit of the bench checkout and whether it has uncommitted changes (None, None for
    an installed bench)."""
    root = root or checkout_root()
    if root is None:
        return {"commit": None, "dirty": None}
    commit = _git(["rev-parse", "HEAD"], root)
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], root)
    return {"commit": commit, "dirty": bool(status)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return round(pages * size / 2**30, 1)


def machine() -> dict[str, Any]:
    """The machine: host, OS, CPU model and count, memory."""
    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
    }


def software() -> dict[str, str]:
    """Versions of Python, bench and the libraries every run uses."""
    import numpy
    import PIL
    import scipy

    return {
        "python": sys.version.split()[0],
        "bench": bench_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "pillow": PIL.__version__,
    }
