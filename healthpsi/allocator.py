"""Keep large buffers in the process heap instead of fresh memory maps (glibc only).

glibc serves every allocation above its mmap threshold (at most 32 MiB by default) with a new `mmap` and
returns it on `free`, so each large NumPy or Arrow buffer is zero-filled page by page by the kernel again.
A node's build job allocates and frees such buffers for every partition, and the page faults cost as much
as a third of its tokenising time. Raising the threshold and the trim limit lets freed buffers be reused.
The settings are inherited by forked worker processes.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_SETTINGS = ((_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 1 << 31), (_M_TOP_PAD, 1 << 28))


def tune() -> bool:
    """Apply the heap settings to this process; False where the C library has no glibc `mallopt`."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all(mallopt(option, value) == 1 for option, value in _SETTINGS)
