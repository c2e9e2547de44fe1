"""Keeping freed activations in the process instead of handing them back to the kernel.

glibc's malloc serves a large block (above its mmap threshold, 128 KiB to start with) by
mapping fresh pages and unmaps them when the block is freed, and it returns the free top of
its heap to the kernel beyond a trim threshold. A meta-iteration that loops over tasks frees
every task's activations before the next task allocates the same sizes again (75 images of
64x28x28 are 15 MB per tensor), so every task's first writes page-fault. On Omniglot's max-pool
Conv4 (second-order MAML, one thread) a benchmark process's iterations took 3.6-4.2 s or 2.6 s
depending on the heap's state, and 2.6 s every time with the thresholds raised; in ``modmeta
train`` the gain is 7-10% (benchmarks/SPEED.md).

:func:`keep_freed_memory` raises both thresholds, so such blocks are reused from the heap. It
changes the whole process, so the library never calls it: ``modmeta``'s own commands do, for
their own processes (``MODMETA_MALLOC=system`` in the environment leaves malloc as it is), and
a user of the Python API may call it for theirs.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # blocks under 32 MiB come from the heap (Omniglot's largest activations: 15 MB)
TRIM_THRESHOLD = 1 << 30  # the heap keeps up to 1 GiB of free memory at its top


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed blocks under 32 MiB for reuse instead of returning them
    to the kernel (``mallopt`` of the mmap and trim thresholds); the process's resident memory
    then stays near its peak. Returns ``False``, changing nothing, where malloc is not glibc's
    (macOS, Windows, musl)."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return False
    mmap_set = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    trim_set = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return mmap_set == 1 and trim_set == 1
