"""Keep the memory a training step frees in the process heap, for the next step.

A step allocates and frees the same few dozen multi-megabyte arrays every iteration
(activations, their gradients). glibc's malloc gives arrays over its mmap threshold their
own mapping and unmaps them on free, and returns the top of the heap to the kernel once
more than its trim threshold is free there; both thresholds adapt, but not to a step's mix
of sizes. So every step faulted its arrays' pages in again, and the kernel zeroed each
4 KiB page first: measured on the reference net at batch 64 and 2 threads, 12% of the
step's CPU time was spent in the kernel, against 2% with the heap kept.

keep_freed_memory() sets, once per process, an mmap threshold of 32 MiB (glibc's largest:
bigger arrays still get mappings of their own) and trimming only beyond 1 GiB free at the
top of the heap. The process then keeps up to its peak heap mapped between steps, as a
caching allocator does; memory in use is unchanged. Nothing is changed when the user chose
malloc settings in the environment (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_,
MALLOC_TOP_PAD_ or glibc.malloc tunables in GLIBC_TUNABLES), or outside glibc.
"""

import ctypes
import os

# mallopt's parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

_MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit (HEAP_MAX_SIZE / 2)
_TRIM_THRESHOLD = 1 << 30

_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def _user_chose_malloc_settings():
    return (any(name in os.environ for name in _USER_SETTINGS)
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""))


def keep_freed_memory():
    """Apply the heap policy above; True when it was applied."""
    if _user_chose_malloc_settings():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, TypeError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; a libc that rejects a value keeps its own behaviour.
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
