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

    def preload(self, modules: Sequence[str]) -> None:  # noqa: B027 (optional hook)
        """Modules every job will import (``torch``, ``compressai``): an executor may import
        them once for all its workers. The runner calls it before ``map``."""

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
    """Jobs in ``workers`` processes on this machine; a crashed worker costs only its job.

    Workers are spawned (a fresh interpreter each), or, when the jobs need slow imports
    (``preload``: importing torch and CompressAI takes about 6 CPU-seconds), forked from a
    fork server that imported them once: a fresh single-threaded process that has run no
    job, so nothing of the main process's state (its threads, torch's thread pool) is
    inherited.

    When a worker dies (a segfault in a codec library), the jobs that were in flight are
    retried one at a time in a fresh process; one that kills it again becomes ``crashed``
    records.
    """

    name = "local-pool"

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))
        self.modules: tuple[str, ...] = ()

    def preload(self, modules: Sequence[str]) -> None:
        """Start the fork server now, importing ``modules``, so that its imports overlap
        with whatever this process does before the sweep (planning imports them too)."""
        self.modules = tuple(dict.fromkeys([*self.modules, *modules]))
        context = pool_context(self.modules)
        if context.get_start_method() == "forkserver":
            from multiprocessing import forkserver

            forkserver.ensure_running()

    def map(
        self,
        jobs: Sequence[J],
        work: Callable[[J], list[R]],
        crashed: Callable[[J, str], list[R]],
    ) -> Iterator[list[R]]:
        return in_pool(list(jobs), self.workers, work, crashed, self.modules)


def _worker_start(
    parent: int,
    threads: int | None = None,
    forked: bool = False,
    environment: dict[str, str] | None = None,
) -> None:
    """Worker initializer: memory tuning, one OpenCV thread (the pool is the parallelism),
    ``threads`` torch threads (workers x threads = cores), and exit when the main process
    ``parent`` is gone (a ``kill -9`` of it would otherwise leave the workers running forever,
    re-parented).

    ``parent`` comes from the main process, not from ``os.getppid()`` here: a spawned worker
    still importing when the main process dies would read its new parent (the reaper) and
    never notice. A worker ``forked`` by the fork server has that server as its parent, which
    exits with the main process: it watches both. It also takes the main process's
    ``environment`` of now, since it inherited the server's, which is as old as the server
    (and lacks what the main process's imports or the user set since).
    """
    launcher = os.getppid()
    if (launcher != parent and not forked) or not _alive(parent):
        os._exit(1)
    if environment is not None:
        os.environ.clear()
        os.environ.update(environment)
    tune_worker(threads)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != launcher or not _alive(parent):
                os._exit(1)

    threading.Thread(target=watch, name="bench-parent-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's (the pid was reused)
        return True
    return True


def pool_context(modules: Sequence[str]) -> multiprocessing.context.BaseContext:
    """``spawn``, or where ``modules`` are given and the platform has it, a ``forkserver``
    that imports them once before it forks any worker (one server per process: one started
    earlier keeps what it imported; its workers get the pool's environment from
    ``_worker_start``)."""
    if not modules or "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from bench.forkserver import IMPORTS_VARIABLE

    # Read by bench.forkserver in the server, which inherits this environment when it starts.
    os.environ[IMPORTS_VARIABLE] = ",".join(modules)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bench.forkserver"])
    return context


def in_pool(
    jobs: list[Any],
    workers: int,
    work: Callable[[Any], list[Any]],
    crashed: Callable[[Any, str], list[Any]],
    preload: Sequence[str] = (),
) -> Iterator[list[Any]]:
    """The process-pool loop of ``LocalPool`` (see there)."""
    queue = list(reversed(jobs))
    suspects: list[Any] = []
    context = pool_context(preload)
    forked = context.get_start_method() == "forkserver"
    environment = dict(os.environ) if forked else None
    threads = threads_per_worker(workers)
    while queue or suspects:
        if suspects:
            job = suspects.pop()
            with ProcessPoolExecutor(
                1,
                mp_context=context,
                initializer=_worker_start,
                initargs=(os.getpid(), threads, forked, environment),
            ) as solo:
                try:
                    yield solo.submit(work, job).result()
                except BrokenProcessPool as exc:
                    yield crashed(job, str(exc) or "BrokenProcessPool")
            continue
        with ProcessPoolExecutor(
            workers,
            mp_context=context,
            initializer=_worker_start,
            initargs=(os.getpid(), threads, forked, environment),
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
