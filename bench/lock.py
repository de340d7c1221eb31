"""One writer per run directory: an advisory lock held while a run writes it.

Two ``bench run`` into one ``--out`` (or a ``--resume`` while the run is still going) would
append the same records twice; the second is refused, naming the process that holds the lock.
The lock is ``fcntl.flock`` on ``RUN_DIR/.bench.lock``: the kernel releases it when the holder
exits, however it exits, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import IO

from bench.errors import UsageError

LOCK_FILE = ".bench.lock"


class RunLock:
    """``with RunLock(directory): ...`` holds the directory's lock, or raises UsageError.

    ``name`` is the lock file in ``directory``; ``target`` and ``what`` name what is locked
    and by whom in the refusal (default: the directory, another bench run).
    """

    def __init__(
        self,
        directory: Path,
        name: str = LOCK_FILE,
        *,
        target: Path | None = None,
        what: str = "bench run",
    ) -> None:
        self.path = Path(directory) / name
        self.target = Path(directory) if target is None else Path(target)
        self.what = what
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock, or raise UsageError naming the process that holds it."""
        try:
            import fcntl
        except ImportError:  # not a POSIX system: no lock (documented)
            return
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise UsageError(
                f"{self.target} is being written by another {self.what} (process {holder}); "
                "wait for it to finish, or write elsewhere with --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the flock
            self._handle = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.release()
