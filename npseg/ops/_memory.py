"""Keep the memory NumPy frees, so that the next training step reuses it.

A training step allocates and frees the same arrays every step: activations, gradients, column
matrices. With glibc's default settings, ``malloc`` serves large blocks with ``mmap`` and hands
them back to the operating system when they are freed (and trims the heap once more than 128 KiB
is free at its top). The next step gets fresh pages, and the kernel zeroes each 4 KiB page on its
first touch: a page fault each. A small U-Net step took about 6,000 of them, 15 % of its time.

At import, ``npseg.ops`` therefore sets two glibc ``malloc`` parameters (``mallopt``):

- ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's maximum): blocks up to that size come from the heap;
- ``M_TRIM_THRESHOLD`` = 1 GiB: freed memory stays with the process unless that much of it is
  free at the top of the heap.

The process then keeps about its peak working set between steps, as a caching allocator does
(PyTorch's on the GPU). Blocks over 32 MiB still use ``mmap``. The settings are process-wide.
They are skipped where the C library is not glibc (macOS, musl), and when the environment
variable ``NPSEG_KEEP_FREED_MEMORY`` is ``0`` (``1``, the default, applies them).
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["keep_freed_memory"]

# mallopt parameter numbers, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20   # the largest value glibc accepts on 64-bit systems
TRIM_THRESHOLD = 1 << 30


def _enabled() -> bool:
    value = os.environ.get("NPSEG_KEEP_FREED_MEMORY", "1").strip()
    if value not in ("0", "1"):
        raise ValueError(f"the environment variable NPSEG_KEEP_FREED_MEMORY must be 0 or 1, "
                         f"got {value!r}")
    return value == "1"


def keep_freed_memory() -> bool:
    """Set glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` (see the module docstring).

    Returns True when both were set; False when the C library is not glibc or the environment
    variable ``NPSEG_KEEP_FREED_MEMORY`` is ``0``.
    """
    if not _enabled() or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success, 0 on an out-of-range value
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
