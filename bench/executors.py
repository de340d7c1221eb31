"""Executors run a sweep's jobs and stream back their records; crash isolation and retries
live here, not in the runner.

An executor takes the jobs, the function that does one (``work``, importable by a worker
process) and the function that turns a job whose process died into error records
(``crashed``), and yields each job's records as it finishes, in any order.
"""

from __future__ import annotations

import abc
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from bench.memory import keep_freed_arrays_mapped, threads_per_worker, tune_worker

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")


class Executor(abc.ABC):
    """Runs jobs; ``name`` goes into the run manifest."""

    name: str = ""

    def start(self) -> None:  # noqa: B027 (optional hook)
        """Get ready to run jobs (e.g. connect to a cluster); the runner calls it before it
        makes the run directory, so an executor that cannot start leaves nothing behind.

        Raises:
            UsageError: the executor cannot start (naming why).
        """

    @abc.abstractmethod
    def map(
        self,
        jobs: Sequence[J],
        work: Callable[[J], list[R]],
        crashed: Callable[[J, str], list[R]],
    ) -> Iterator[list[R]]:
        """Yield each job's results as it finishes."""


class InProcess(Executor):
    """Jobs one after another in this process: no isolation (a crashing codec library takes
    the run with it), but nothing to pickle; for debugging and library use."""

    name = "in-process"

    def map(
        self,
        jobs: Sequence[J],
        work: Callable[[J], list[R]],
        crashed: Callable[[J, str], list[R]],
    ) -> Iterator[list[R]]:
        keep_freed_arrays_mapped()
        for job in jobs:
            yield work(job)


class LocalPool(Executor):
    """Jobs in ``workers`` spawned processes on this machine; a crashed worker costs only its
    job.

    When a worker dies (a segfault in a codec library), the jobs that were in flight are
    retried one at a time in a fresh process; one that kills it again becomes ``crashed``
    records.
    """

    name = "local-pool"

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))

    def map(
        self,
        jobs: Sequence[J],
        work: Callable[[J], list[R]],
        crashed: Callable[[J, str], list[R]],
    ) -> Iterator[list[R]]:
        return in_pool(list(jobs), self.workers, work, crashed)


def _worker_start(parent: int, threads: int | None = None) -> None:
    """Worker initializer: memory tuning, one OpenCV thread (the pool is the parallelism),
    ``threads`` torch threads (workers x threads = cores), and exit when the main process
    ``parent`` is gone (a ``kill -9`` of it would otherwise leave the workers running forever,
    re-parented).

    ``parent`` comes from the main process, not from ``os.getppid()`` here: a worker still
    importing when the main process dies would read its new parent (the reaper) and never
    notice.
    """
    if os.getppid() != parent:
        os._exit(1)
    tune_worker(threads)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="bench-parent-watch", daemon=True).start()


def in_pool(
    jobs: list[Any],
    workers: int,
    work: Callable[[Any], list[Any]],
    crashed: Callable[[Any, str], list[Any]],
) -> Iterator[list[Any]]:
    """The process-pool loop of ``LocalPool`` (see there)."""
    queue = list(reversed(jobs))
    suspects: list[Any] = []
    context = multiprocessing.get_context("spawn")
    threads = threads_per_worker(workers)
    while queue or suspects:
        if suspects:
            job = suspects.pop()
            with ProcessPoolExecutor(
                1, mp_context=context, initializer=_worker_start, initargs=(os.getpid(), threads)
            ) as solo:
                try:
                    yield solo.submit(work, job).result()
                except BrokenProcessPool as exc:
                    yield crashed(job, str(exc) or "BrokenProcessPool")
            continue
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_worker_start, initargs=(os.getpid(), threads)
        ) as pool:
            running: dict[Future[list[Any]], Any] = {}
            broken = False
            while (queue and not broken) or running:
                while queue and not broken and len(running) < workers:
                    job = queue.pop()
                    try:
                        running[pool.submit(work, job)] = job
                    except BrokenProcessPool:
                        # A worker died after the last wait returned; this job never ran.
                        queue.append(job)
                        broken = True
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    job = running.pop(future)
                    try:
                        yield future.result()
                    except BrokenProcessPool:
                        broken = True
                        suspects.append(job)
            if broken:
                log.warning(
                    "a worker process died; retrying %d job(s) one at a time", len(suspects)
                )


def local(workers: int) -> Executor:
    """The local executor for ``--workers``: in-process for 0, else a process pool."""
    return LocalPool(workers) if workers > 0 else InProcess()
