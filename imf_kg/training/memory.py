"""Process-wide allocator setting for CPU training: keep freed memory instead of returning it to the OS.

glibc serves every block of 32 MiB or more (and smaller ones until its adaptive threshold has grown) with a
fresh ``mmap`` and gives it back with ``munmap`` when freed. 1-N training allocates several ``(B, N)`` score
matrices per step (512 x 40,943 floats = 84 MB on WN18RR); each fresh page costs a page fault and zeroing on
first touch, so writing a new matrix took 78 ms where writing into a reused one took 18 ms (one thread, this
machine). With large blocks served from the heap and kept after ``free``, an IMF step on WN18RR (d = 64,
batch 512) went from 4.5 s to 2.4 s, a structure-only step from 0.81 s to 0.43 s
(``benchmarks/train_speed.py --data .../WN18RR --dim 64 --fusion-rank 128 --batch-size 512 [--malloc-tuning]``).

The cost: the process keeps its high-water mark of heap memory instead of shrinking after a peak. It is a
process-wide choice, so the library never makes it on import; the command-line entry points (``imf-kg``,
``node-tasks``) call :func:`keep_freed_memory` unless ``IMF_KG_MALLOC_TUNING=0``.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Ask glibc to serve blocks up to 1 GiB from the heap and to keep up to 2 GiB of freed memory.

    Returns True when the setting took effect; False where glibc's ``mallopt`` is unavailable (macOS,
    Windows, musl) or ``IMF_KG_MALLOC_TUNING=0``. Safe to call more than once.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("IMF_KG_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 31))
    return _applied
