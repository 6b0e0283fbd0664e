"""Keep large buffers in the process heap instead of fresh memory maps (glibc only).

glibc serves every allocation above its mmap threshold (at most 32 MiB by default) with a new `mmap` and
returns it on `free`, so each large NumPy or Arrow buffer is zero-filled page by page by the kernel again.
A node's build job allocates and frees such buffers for every partition, and the page faults cost as much
as a third of its tokenising time. Raising the threshold and the trim limit lets freed buffers be reused.
The settings are inherited by forked worker processes. The other side of keeping freed memory: a process
that forks workers after a large step hands them its whole heap, and each child's resident set counts those
pages again; `release` gives the free part back first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

import pyarrow as pa

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_SETTINGS = ((_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 1 << 31), (_M_TOP_PAD, 1 << 28))


def _libc_function(name: str) -> Any:
    """A glibc function by name, or None where the C library does not have it."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        return getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError):
        return None


def tune() -> bool:
    """Apply the heap settings to this process; False where the C library has no glibc `mallopt`."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all(mallopt(option, value) == 1 for option, value in _SETTINGS)


def release() -> bool:
    """Return this process's free heap memory (glibc's and Arrow's pool) to the system; False where the C
    library has no glibc `malloc_trim`."""
    pa.default_memory_pool().release_unused()
    trim = _libc_function("malloc_trim")
    if trim is None:
        return False
    trim.argtypes = (ctypes.c_size_t,)
    trim.restype = ctypes.c_int
    trim(0)
    return True
