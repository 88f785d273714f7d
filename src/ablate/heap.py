"""The process heap on Linux (glibc): keep freed memory for the next allocation.

Why: glibc serves every allocation over its mmap threshold (128 KiB to 32 MiB, adjusted as it
goes) with a fresh mmap and gives it back at free. A training step on a CPU allocates its logits
and their gradient (batch x block x vocab floats: 103 MB at the smoke shapes) and frees them,
every step, so each step maps new pages and the kernel zeroes them on first touch: on 2 cores a
third of the CPU time went to page faults, in the kernel (``benchmarks/bench_heap.py`` measures
it side by side). Raising the mmap and trim thresholds makes freed blocks stay in the heap for the
next step. The cost: memory a process freed stays in its RSS (at the top of the heap up to
``TRIM_BYTES``; holes below blocks still in use without a limit) until ``return_freed_memory``
(the matrix process calls it after its causality probes). Only CPU jobs set it: a GPU job's
large tensors live on the GPU. Blocks over 64 MiB allocated by threads other than the main one
are still mapped fresh (glibc's thread arenas).

A user who sets glibc's own malloc variables (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_TOP_PAD_``, any ``glibc.malloc.*`` tunable in ``GLIBC_TUNABLES``) or preloads another
malloc (``LD_PRELOAD``) keeps that: nothing is changed then. Other C libraries and systems, and a
glibc that refuses the thresholds (older ones cap the mmap threshold at 32 MiB): nothing is changed.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_BYTES = 1 << 30
"""Allocations up to this size come from the heap, whose freed blocks are reused (glibc's
M_MMAP_THRESHOLD; larger ones are still mapped and unmapped)."""
TRIM_BYTES = (1 << 31) - 1
"""Freed memory at the top of the heap kept for reuse, at most (glibc's M_TRIM_THRESHOLD)."""

_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
_state: dict[str, str] = {}


def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: glibc's mallopt and malloc_trim
        libc.mallopt, libc.malloc_trim  # noqa: B018  (both must exist)
    except (OSError, AttributeError):
        return None
    return libc


def _user_chose() -> str | None:
    for name in _USER_SETTINGS:
        if name in os.environ:
            return name
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    if "malloc" in os.environ.get("LD_PRELOAD", ""):  # jemalloc, tcmalloc: not glibc's heap
        return "LD_PRELOAD"
    return None


def reuse_freed_memory() -> str:
    """Keep freed memory in the heap for the next allocation (module docstring). Returns what
    was done, for the job's env.json; calling it again changes nothing."""
    if "done" in _state:
        return _state["done"]
    chosen = _user_chose()
    libc = None if chosen else _libc()
    if chosen:
        done = f"as set by the user ({chosen})"
    elif libc is None:
        done = "unchanged (not glibc)"
    elif libc.mallopt(M_MMAP_THRESHOLD, MMAP_BYTES) == 1 and (
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_BYTES) == 1
    ):
        done = f"freed blocks reused (glibc mmap threshold {MMAP_BYTES >> 20} MiB)"
    else:
        done = "unchanged (glibc refused mallopt)"
    _state["done"] = done
    return done


def state() -> str:
    """What ``reuse_freed_memory`` did in this process (for env.json), changing nothing."""
    return _state.get("done", "unchanged (not asked: a GPU job)")


def return_freed_memory() -> None:
    """Give the heap's freed memory back to the system (after a burst of large allocations that
    will not come again soon, such as the causality probes in the matrix process)."""
    if not _state.get("done", "").startswith("freed blocks reused"):
        return
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
