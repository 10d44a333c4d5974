"""Keeping resident memory close to what a stage actually holds (docs/reproducibility.md).

glibc's allocator raises its mmap threshold after a large block is freed (up to 32 MB), so the
many per-batch tensors of a long training run are then carved from the brk heap, which
fragments and is not given back to the system: the study's ladder held about 6 GB of heap that
no live object used. `limit_heap` fixes the threshold at 1 MiB (larger blocks are mapped and
returned when freed), and `release` collects garbage and returns free heap pages
(``malloc_trim``). Both do nothing where glibc is not the allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
_libc = None


def _glibc():
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc = lib if hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else False
        except OSError:
            _libc = False
    return _libc or None


def limit_heap(threshold: int = 1 << 20) -> bool:
    """Map every allocation of at least `threshold` bytes (True when glibc took the setting)."""
    lib = _glibc()
    return bool(lib is not None and lib.mallopt(_M_MMAP_THRESHOLD, int(threshold)))


def release() -> None:
    """Collect garbage and give free heap pages back to the system."""
    gc.collect()
    lib = _glibc()
    if lib is not None:
        lib.malloc_trim(0)
