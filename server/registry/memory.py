"""Process memory as the control path sees it: RSS for each version's memory cost, and giving
freed memory back to the operating system after an unload.

glibc's malloc raises its mmap threshold after a large block is freed, so the next session's
weights and arenas come from the heap, and an unloaded session's pages stay in the process
(measured: 20 load/unload cycles of a 16 MB model held RSS at the loaded level, +65 MB).
`malloc_trim(0)` after an unload hands them back; `MALLOC_TRIM_THRESHOLD_` in the image and the
run script keeps the threshold fixed as well. Other allocators (musl, jemalloc): a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_rss_bytes() -> int | None:
    """Resident set size of this process (Linux `/proc/self/statm`); None where unavailable."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return None


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_malloc_trim = _find_malloc_trim()


def release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc `malloc_trim`); blocking: call off the loop."""
    if _malloc_trim is not None:
        _malloc_trim(0)
