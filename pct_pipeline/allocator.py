"""Keep freed tensor memory mapped between the steps of a long loop (glibc malloc).

PyTorch's CPU tensors come from the C library's malloc. With glibc's defaults a freed block
above the (dynamic, from 128 KiB) mmap threshold is unmapped, and free memory at the top of
the heap above the trim threshold goes back to the kernel; the next step allocates the same
sizes and page-faults every page back in. A CPU training step of `cnn_wide` (batch 64, 32 px,
1,000 classes) met 2,000-12,000 minor faults per step that way (8-47 MB), varying with the
order of allocations (a distillation loss's extra [B, C] tensors change it): about a fifth of
the step, and cached-KD training measured 0.79-0.87x the speed of CE-only training for it
(bench/train.py). `keep_freed_memory` raises both thresholds: blocks under 32 MiB (glibc's
largest mmap threshold) come from the heap, and up to 1 GiB of free heap stays mapped. Then
under 50 faults per step; the process holds its peak working set, which every step uses
again. Elsewhere than glibc (musl, macOS) it does nothing. Device memory on CUDA has its own
caching allocator; this concerns host tensors.

`freeze_built_objects` (called once the run is built) moves every object alive then into the
cyclic collector's permanent generation: a full collection walked them all (torch, zarr, ffcv
and numba objects: ~340 ms of CPU here, holding the GIL inside a timed epoch).
"""
import ctypes
import ctypes.util
import gc

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2**30


def keep_freed_memory():
    """Raise glibc's mmap and trim thresholds in this process; True if they were set."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def freeze_built_objects():
    """Collect once, then leave every object alive now out of later cyclic collections."""
    gc.collect()
    gc.freeze()
