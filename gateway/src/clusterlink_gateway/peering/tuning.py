"""Process-wide tuning for the relay's data path.

Relaying allocates many short-lived buffers of 64 KiB-1 MiB (socket reads, TLS records,
HTTP/2 frames). With glibc's defaults, buffers above the mmap threshold are mmap'ed and unmapped
each time and the heap is trimmed eagerly, so every buffer costs fresh page faults: measured on
loopback, that doubles the gateways' CPU per GB. Call ``tune_malloc`` once at start-up.
After a burst of unauthenticated connections the peer acceptor calls ``trim_heap``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("clusterlink.peering")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc(mmap_threshold: int = 4 << 20, trim_threshold: int = 32 << 20) -> bool:
    """Keep buffers below ``mmap_threshold`` on the heap and keep up to ``trim_threshold`` of
    free heap; True if applied (glibc only, a no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
    log.debug("malloc tuned", extra={"applied": ok, "mmap_threshold": mmap_threshold})
    return ok


def trim_heap() -> bool:
    """Hand free heap pages back to the system (``malloc_trim(0)``); True if any were.

    ``tune_malloc`` keeps up to ``trim_threshold`` of free heap at its top, and free chunks in
    the middle of the heap are never returned on their own: after a burst of short-lived
    connections, resident memory would stay at the burst's peak. glibc only; False elsewhere.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        malloc_trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    released = bool(malloc_trim(0))
    log.debug("heap trimmed", extra={"released": released})
    return released
