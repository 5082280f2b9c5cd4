"""Settings that touch the whole process, applied only on purpose: by :func:`tune_process`, which the
command line calls before it imports torch and a program using dacli as a library may call
(``dacli.tune_process()``), never by importing dacli or loading a model. Training keeps torch's
defaults (``make train`` sets its own OpenMP spin in the environment)."""

import ctypes
import os
import sys

# Heap pages kept for reuse, see release_memory (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD of mallopt(3))
_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD = -3, -1
_KEEP_FREED = 1 << 30
RSS_BUDGET = 1280 << 20

_libc: "ctypes.CDLL | bool | None" = None  # glibc once tune_allocator succeeded, False where it cannot


def tune_process() -> None:
    """Apply the process settings inference runs best with, for the whole process: glibc's
    ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` at 1 GiB (:func:`tune_allocator`): freed activations
    stay in the heap for the next window instead of going back to the OS; :func:`release_memory` hands
    free pages back once the resident size passes 1.25 GiB.

    OpenMP's spin is left at libgomp's default (``GOMP_SPINCOUNT``, yours if set): the C Snake kernel
    runs in torch's OpenMP team (:mod:`dacli.runtime.snake`), so the threads that spin after a
    convolution are the ones that take the Snake after it; a short spin made them sleep between
    layers and wake again, slower for files and twice as slow for streams (measured with
    ``python benchmarks/process_settings.py``, docs/PERFORMANCE.md). Idempotent."""
    tune_allocator()


def tune_allocator() -> None:
    """Keep large freed blocks in glibc's heap instead of returning them to the OS: inference allocates
    the same big activations layer after layer, and page-faulting them in afresh costs 30-40 % of the
    CPU time (measured, 44.1 kHz model, stereo: encode 0.30 → 0.22 s, decode 0.58 → 0.41 s per
    second of audio). :func:`release_memory` hands the free pages back between windows."""
    global _libc
    if _libc is not None or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _KEEP_FREED)
        libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED)
        _libc = libc
    except (OSError, AttributeError):
        _libc = False


def _rss():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_memory(force=False):
    """After a window: when the resident size is over RSS_BUDGET (or ``force``, once a model is
    built), return the heap's free pages to the OS, so that fragmentation cannot make it grow with
    the length of the file. Below the budget the free pages are kept for the next window
    (page-faulting them in afresh is what costs).
    Measured, full 44.1 kHz model, 2 s windows: a stereo decode that never trims peaks at 2.07 GB;
    trimming whenever more than 256 MB of the heap is free holds it at 1.36 GB but then trims after
    every window of every file, 7-20 % slower; a mono encode stays under the budget and never trims."""
    if isinstance(_libc, ctypes.CDLL) and (force or _rss() > RSS_BUDGET):
        _libc.malloc_trim(0)
