"""Process memory as the control path sees it: RSS for each version's memory cost, and an allocator
that gives an unloaded version's memory back to the operating system.

glibc's malloc raises its mmap and trim thresholds after a large block is freed (up to 32 and
64 MiB), so the next session's weights come from a thread's heap, and the free space left at
the top of that heap is never trimmed, not even by `malloc_trim(0)`. Measured with a 16 MiB
version (tests/integration/test_unload_memory.py): 20 load/unload cycles ended at +32% RSS
(113 -> 150 MiB, with `malloc_trim(0)` after each unload), each load "costing" 18-52 MiB.
A fixed trim threshold (which also freezes the mmap threshold) ended at +0.6%, each load
costing its 16.2 MiB. `hotserve serve` sets it at start (`tune_allocator`); the image and
`scripts/run.sh` set `MALLOC_TRIM_THRESHOLD_` as well, which covers start-up too. With another
allocator (musl, jemalloc) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

TRIM_THRESHOLD_BYTES = 128 * 1024
"""glibc's own default, kept fixed instead of growing with the largest block ever freed."""
_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_rss_bytes() -> int | None:
    """Resident set size of this process (Linux `/proc/self/statm`); None where unavailable."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return None


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None  # glibc; elsewhere absent or a no-op


_libc = _glibc()


def tune_allocator() -> bool:
    """Freeze glibc's trim (and so mmap) threshold unless `MALLOC_TRIM_THRESHOLD_` chose one.

    Returns whether glibc took the setting.
    """
    if _libc is None:
        return False
    threshold = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    value = int(threshold) if threshold and threshold.isdigit() else TRIM_THRESHOLD_BYTES
    return bool(_libc.mallopt(_M_TRIM_THRESHOLD, value))
