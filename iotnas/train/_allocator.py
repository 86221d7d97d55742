"""Keep freed tensor memory in the process instead of handing it back to the kernel (glibc only).

glibc serves a block above its mmap threshold (at most 32 MiB, adjusted as blocks come and go)
with fresh pages from the kernel and unmaps it on free, so a CPU training step whose activations
exceed that threshold faults every page of them in again at every step. On one core,
resnext/s3/2 (batch 128) took 6.5 million page faults per 8,192 images and trained at 390 img/s;
with the thresholds raised, 153 thousand and 767 img/s (mobilenetv2/s4/39: 698 -> 917 img/s;
BENCHMARKS.md, "Page faults in CPU training"). The cost is that a training process keeps its peak heap until it
exits, which is what a training process needs anyway; ``IOTNAS_KEEP_FREED_MEMORY=0`` in the
environment leaves glibc's defaults alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys

log = logging.getLogger(__name__)

#: glibc's ``mallopt`` parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
#: Blocks up to this size come from the heap, and the heap keeps this much free memory before trimming.
KEEP_BYTES = 1 << 30
#: Set to "0" to keep glibc's default thresholds.
OPT_OUT = "IOTNAS_KEEP_FREED_MEMORY"


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process, once; False where there is no glibc
    or the environment opts out."""
    if os.environ.get(OPT_OUT) == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    kept = bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
    log.debug("freed memory kept in the heap: %s", kept)
    return kept
