"""Process-level tuning for sweep workers: memory and threads."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_arrays_mapped() -> bool:
    """Stop glibc from returning every freed large array to the kernel at once.

    Metrics allocate a dozen float64 temporaries of an image's size per score; by default
    glibc maps and unmaps each one, and the page faults cost about 40 % of metric time. Keeping
    them in the heap (mmap threshold 256 MiB, trim threshold 1 GiB) removes that cost. Called
    in worker processes; returns False where it does not apply (not glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 256 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def single_threaded_filters() -> None:
    """One OpenCV thread in this process: a pool of worker processes already uses every core,
    and OpenCV's own threads would only contend with it."""
    import cv2

    cv2.setNumThreads(1)


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """Torch threads for each of ``workers`` pool processes so that workers x threads is the
    number of cores (at least one): more threads per process than that only oversubscribe
    the cores (two one-thread CompressAI processes code Kodak 1.75x faster than one with two
    threads)."""
    return max(1, cores() // max(1, workers))


def limit_threads(threads: int) -> None:
    """At most ``threads`` intra-op threads for torch (and OpenMP/MKL) in this process.

    Before torch is imported this sets ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS``, which torch
    reads when it starts its thread pool (importing torch here would cost seconds in workers
    that never use it); when it is already imported, ``torch.set_num_threads``. A variable
    the user set wins.
    """
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, str(threads))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def tune_worker(threads: int | None = None) -> None:
    """What every process that runs jobs sets up first (a local pool's worker or a Ray task):
    freed arrays kept mapped, one OpenCV thread, and ``threads`` torch threads when given
    (``threads_per_worker``)."""
    keep_freed_arrays_mapped()
    single_threaded_filters()
    if threads is not None:
        limit_threads(threads)
