"""Imported by a local pool's fork server alone (``bench.executors.pool_context`` adds it to the
server's preload list): the server's exit skips the interpreter's teardown, which takes about
1.8 CPU-seconds once torch and CompressAI are loaded. The server writes nothing and holds no
state of a run, so there is nothing to flush; the workers it forks leave through ``os._exit``
already and do not run this."""

from __future__ import annotations

import atexit
import os
import sys


def _in_fork_server() -> bool:
    """Whether this is multiprocessing's fork server (``python -c "from
    multiprocessing.forkserver import main; ..."``), never a process of bench's own."""
    return sys.argv[:1] == ["-c"] and "multiprocessing.forkserver" in sys.modules


if _in_fork_server():
    atexit.register(os._exit, 0)
