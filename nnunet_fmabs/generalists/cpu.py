"""CPU settings that the image encoder and the per-slice numpy work need on small machines.

Both measured on the project's 2-core VM and on 2 pinned cores of a Xeon (LiteMedSAM):

* :func:`heap_kept`: glibc serves every allocation above its mmap threshold (32 MB at most)
  with a fresh ``mmap`` and gives it back with ``munmap`` when the tensor dies, so each large
  activation is page-faulted and zeroed again by the kernel. One slice in a batch of 8 faulted
  3.5 GB (1.7 GB alone) and spent as long in the kernel as in arithmetic (Xeon, fp32: 1.46
  s/slice at batch 8, 1.15 at batch 1). That, not attention or window copies, made batches
  slower per slice. Inside the block large blocks come from the heap and stay there: 0.63 and
  0.56 s/slice, no faults; on exit glibc's defaults come back and ``malloc_trim`` returns the
  memory.
* :func:`single_threaded_blas`: numpy's OpenBLAS threads and torch's OpenMP threads fight
  over 2 cores: a 112 x 80 -> 256 x 183 resampling (two small matmuls) took 30-40 ms right
  after a torch op, 1.6-1.9 ms with OpenBLAS held to one thread.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
import threading
from typing import Iterator

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
DEFAULT_TRIM_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 65536
KEPT_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: at most 2 GB of free heap kept

_LOCK = threading.Lock()
_depth = 0


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (only glibc has these mallopt parameters)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()


def glibc_available() -> bool:
    """Whether the process runs on glibc, where :func:`heap_kept` has an effect."""
    return _LIBC is not None


@contextlib.contextmanager
def heap_kept(enabled: bool = True) -> Iterator[None]:
    """Serve large allocations from the heap and keep freed memory there, for the block's length.

    Re-entrant and thread-safe (the outermost block restores glibc's defaults and trims).
    A no-op off glibc or when ``enabled`` is False.
    """
    global _depth
    if not enabled or _LIBC is None:
        yield
        return
    with _LOCK:
        if _depth == 0:
            _LIBC.mallopt(M_MMAP_MAX, 0)
            _LIBC.mallopt(M_TRIM_THRESHOLD, KEPT_TRIM_THRESHOLD)
        _depth += 1
    try:
        yield
    finally:
        with _LOCK:
            _depth -= 1
            if _depth == 0:
                _LIBC.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                _LIBC.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                _LIBC.malloc_trim(0)


def single_threaded_blas() -> contextlib.AbstractContextManager:
    """numpy's BLAS held to one thread for the block (threadpoolctl, where installed; torch's
    own BLAS is linked into torch and not affected)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
