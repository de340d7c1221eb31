"""Process-level tuning for sweep workers: memory and threads."""

from __future__ import annotations

import ctypes
import ctypes.util
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


def tune_worker() -> None:
    """What every process that runs jobs sets up first (a local pool's worker or a Ray task):
    freed arrays kept mapped, one OpenCV thread."""
    keep_freed_arrays_mapped()
    single_threaded_filters()
