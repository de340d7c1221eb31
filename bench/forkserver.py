"""What a local pool's fork server runs before it forks any worker (``bench.executors``
names this module as the server's only preload).

It imports the modules the pool was given (``IMPORTS_VARIABLE``, set by the main process
before it starts the server) one by one, so that a library that fails to import (a broken
torch or torchvision raises RuntimeError, not ImportError) costs only its own codec's jobs:
multiprocessing's own preload stops the server at anything but ImportError, which would break
every worker of the run. Then the server's exit skips the interpreter's teardown, which takes
about 1.8 CPU-seconds once torch and CompressAI are loaded: the server writes nothing and holds
no state of a run. The workers it forks leave through ``os._exit`` and do not run that hook.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import sys

IMPORTS_VARIABLE = "BENCH_FORKSERVER_IMPORTS"
"""Comma-separated module names the fork server imports."""


def _in_fork_server() -> bool:
    """Whether this is multiprocessing's fork server (``python -c "from
    multiprocessing.forkserver import main; ..."``), never a process of bench's own."""
    return sys.argv[:1] == ["-c"] and "multiprocessing.forkserver" in sys.modules


if _in_fork_server():
    for name in filter(None, os.environ.get(IMPORTS_VARIABLE, "").split(",")):
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    atexit.register(os._exit, 0)
