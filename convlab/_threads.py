"""How many threads the compiled kernels use: decided here, once, when they load.

The kernels' OpenMP loops alternate with NumPy GEMMs on OpenBLAS's own thread pool. With
OpenMP's default wait policy, libgomp's idle workers spin for milliseconds after every
parallel loop and take the cores the next GEMM needs (on 2 cores a convolution became 10x
slower). So the loops run in parallel only when the OpenMP runtime they call waits
passively, and single-threaded otherwise.

libgomp reads its wait policy once, from the environment, when it is loaded. So the kernels
are imported with ``OMP_WAIT_POLICY=PASSIVE`` set for the duration of the import and the
environment restored right after: the process environment, and any OpenMP library loaded
later (e.g. PyTorch's), are left as the user had them. That only helps if loading the
kernels is what starts the runtime they call. When an OpenMP runtime is already in the
process and exports its symbols globally (``import torch`` does this), the kernels' calls
bind to it, with whatever policy it started with: then they stay single-threaded, unless
the user asked for a passive policy in the environment (OMP_WAIT_POLICY=passive or
GOMP_SPINCOUNT=0).

Thread count when parallel: OMP_NUM_THREADS if set, else one per CPU this process may use;
``convlab.set_num_threads(n)`` (and ``convlab-train --threads``) changes it, for the kernels
and for NumPy's BLAS alike.

Convolutions and the affine layers of the models run their chunks on threads of their own
(map_chunks, matmul): each chunk's compiled kernels and its GEMMs on one core, with the
BLAS held to one thread meanwhile. OpenBLAS's own threads then never wake inside a
training step. When they do, they spin for a while after each call (about 2^28 cycles by
default, set only by OPENBLAS_THREAD_TIMEOUT before NumPy loads) on the cores the next
layer's workers need: with the first convolution and the affine layer on multithreaded
GEMMs, a reference-net step at 2 threads took as long as at 1. Those worker threads are
plain Python threads (NumPy and the kernels release the GIL), so they scale whatever
OpenMP runtime is loaded. The limits of threadpoolctl are honoured: the workers never
outnumber the threads the BLAS is limited to, and the kernels' OpenMP loops stay within
omp_get_max_threads().
"""

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from convlab._checks import check_int

_OPENMP_RUNTIMES = ("libgomp", "libomp", "libiomp")


def _user_asked_passive():
    return (os.environ.get("OMP_WAIT_POLICY", "").strip().lower() == "passive"
            or os.environ.get("GOMP_SPINCOUNT", "").strip() == "0")


def _loaded_openmp_runtimes():
    """Paths of the OpenMP runtimes mapped into this process (Linux; None elsewhere)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/" in line}
    except OSError:
        return None
    return {p for p in paths if os.path.basename(p).startswith(_OPENMP_RUNTIMES)}


def _global_openmp_symbols():
    """True when a library loaded with global symbols already provides OpenMP: extension
    modules bind their OpenMP calls to it rather than to their own runtime."""
    try:
        process = ctypes.CDLL(None)
    except OSError:
        return False
    return hasattr(process, "GOMP_parallel") or hasattr(process, "__kmpc_fork_call")


@contextmanager
def _environment(name, value):
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


def _cpu_count():
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def requested_threads():
    """OMP_NUM_THREADS (its first entry) when set to a positive int, else the CPU count."""
    requested = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(requested) if requested.isdigit() and int(requested) > 0 else _cpu_count()


class _Threads:
    """The process's thread settings (threads are a property of the process, so this is
    the one place that holds them): the requested count, whether the kernels' OpenMP loops
    may run in parallel, the BLAS controller, the worker pool."""

    def __init__(self):
        self.requested = None  # set_num_threads's count; None: requested_threads()
        self.parallel_loops = False  # decided by load_kernels
        self.kernels = None
        self.lock = threading.RLock()
        self.blas = None  # threadpoolctl's controller of the loaded BLAS libraries
        self.single_threaded_depth = 0
        self.saved_blas_limits = None
        self.pool = None


_STATE = _Threads()


def _blas():
    with _STATE.lock:
        if _STATE.blas is None:
            from threadpoolctl import ThreadpoolController

            _STATE.blas = ThreadpoolController().select(user_api="blas")
        return _STATE.blas


def get_num_threads():
    """The thread count convlab uses: set_num_threads's, else OMP_NUM_THREADS, else the
    number of CPUs this process may use."""
    return _STATE.requested or requested_threads()


def set_num_threads(threads):
    """Use ``threads`` threads (an int >= 1) from now on: for the compiled kernels' loops
    (when their OpenMP policy allows parallel loops at all, see the module docstring), the
    convolutions' chunk workers, and NumPy's BLAS (through threadpoolctl)."""
    threads = check_int(threads, "threads", 1)
    _STATE.requested = threads
    _apply_kernel_threads()
    _blas().limit(limits=threads)  # kept: not a context, the new setting


def _apply_kernel_threads():
    """Give the loaded kernels' OpenMP loops the thread count, or one thread where their
    wait policy does not allow parallel loops (see the module docstring)."""
    if _STATE.kernels is not None:
        _STATE.kernels.set_num_threads(get_num_threads() if _STATE.parallel_loops else 1)


def _blas_threads():
    """The fewest threads any loaded BLAS is limited to (1 with none). Asked once per
    convolution, so straight from the controllers rather than through info()."""
    counts = [lib.get_num_threads() for lib in _blas().lib_controllers]
    return min(counts) if counts else 1


def chunk_workers(n_chunks):
    """How many threads map_chunks runs ``n_chunks`` chunks on: the thread count, no more
    than the BLAS is limited to (threadpoolctl) and no more than there are chunks."""
    threads = get_num_threads()
    if threads <= 1 or n_chunks <= 1:
        return 1
    return max(1, min(threads, n_chunks, _blas_threads()))


@contextmanager
def _single_threaded_blas():
    """The BLAS on one thread inside the block; nested and concurrent blocks share one
    saved limit, restored when the last one ends."""
    with _STATE.lock:
        if _STATE.single_threaded_depth == 0:
            _STATE.saved_blas_limits = _blas().limit(limits=1)
        _STATE.single_threaded_depth += 1
    try:
        yield
    finally:
        with _STATE.lock:
            _STATE.single_threaded_depth -= 1
            if _STATE.single_threaded_depth == 0:
                _STATE.saved_blas_limits.restore_original_limits()


def _pool(workers):
    with _STATE.lock:
        if _STATE.pool is None or _STATE.pool._max_workers < workers:
            _STATE.pool = ThreadPoolExecutor(max_workers=workers,
                                             thread_name_prefix="convlab-chunks")
        return _STATE.pool


def map_chunks(fn, chunks):
    """[fn(n0, nc, threads) for (n0, nc) in chunks], in chunk order. With one worker (see
    chunk_workers) the calls run here with threads=0 (the kernels' own team size) and the
    BLAS as it is; with more, this thread and workers - 1 pool threads each take the next
    chunk not yet taken and run it with threads=1 while the BLAS is held to one thread, so
    each chunk computes on one core. Taking chunks as they come, not a fixed share each,
    keeps both cores busy when one is slowed (by the machine's other work, or a chunk that
    is slower than the rest). fn must write only to its own chunk's part of any shared
    output; its result goes to its chunk's place whichever thread ran it."""
    workers = chunk_workers(len(chunks))
    if workers == 1:
        return [fn(n0, nc, 0) for n0, nc in chunks]
    pool = _pool(workers - 1)
    # NumPy's floating-point error handling is per thread: the caller's (np.errstate) is
    # carried to the workers, so an overflow warns, raises or passes as it would here.
    errors = np.geterr()
    results = [None] * len(chunks)
    taken = iter(range(len(chunks)))
    taking = threading.Lock()

    def run():
        with np.errstate(**errors):
            while True:
                with taking:
                    i = next(taken, None)
                if i is None:
                    return
                try:
                    results[i] = fn(*chunks[i], 1)
                except BaseException:
                    with taking:  # the others take no new chunk
                        for _ in taken:
                            pass
                    raise

    with _single_threaded_blas():
        futures = [pool.submit(run) for _ in range(workers - 1)]
        try:
            run()
        finally:
            for future in futures:  # all finish before the BLAS limit is restored
                future.exception()
        for future in futures:
            future.result()  # a worker's exception, raised here
    return results


def matmul(a, b):
    """a @ b for a (M, K), b (K, N), split among the chunk workers along the longer side of
    the output (rows of a, or columns of b: then each worker reads only its part of the
    larger operand, as in an affine layer's (N, M) forward or its (N, D) dx), so the models'
    affine layers never wake OpenBLAS's own threads (see the module docstring)."""
    M, N = a.shape[0], b.shape[1]
    out = np.empty((M, N), dtype=np.result_type(a, b))

    def rows(r0, count, threads):
        np.matmul(a[r0:r0 + count], b, out=out[r0:r0 + count])

    def columns(c0, count, threads):
        np.matmul(a, b[:, c0:c0 + count], out=out[:, c0:c0 + count])

    map_chunks(rows if M >= N else columns, _ranges(max(M, N), get_num_threads()))
    return out


def _ranges(length, pieces):
    """(start, count) pairs of at most ``pieces`` (>= 1) ranges of about equal size that
    cover 0 .. length, in order."""
    per_piece = max(1, -(-length // pieces))
    return [(i0, min(per_piece, length - i0)) for i0 in range(0, length, per_piece)]


# Elements of sum_stack's output a worker takes at least: a smaller piece costs more to
# hand over than to add.
_SUM_PIECE = 1 << 15


def sum_stack(stack):
    """stack[0] + stack[1] + ... for an (S, ...) array: the terms added in stack order, as
    np.add.reduce(stack, axis=0) adds them (the same result, bit for bit), with the output's
    elements split among the chunk workers. The Winograd backward's filter-gradient shares,
    one per chunk, are 38 MB at 16 threads for a 128 -> 128 layer: too much for one core
    between the parallel parts of a step."""
    out = np.empty(stack.shape[1:], dtype=stack.dtype)
    terms = stack.reshape(len(stack), -1)  # (S, n)
    flat = out.reshape(-1)
    n = flat.shape[0]

    def piece(e0, count, threads):
        np.add.reduce(terms[:, e0:e0 + count], axis=0, out=flat[e0:e0 + count])

    map_chunks(piece, _ranges(n, max(1, min(get_num_threads(), n // _SUM_PIECE))))
    return out


def load_kernels():
    """Import convlab._kernels under a passive OpenMP wait policy and set its thread count
    by the policy above, once: later calls return the module already loaded. Returns the
    module."""
    if _STATE.kernels is not None:
        return _STATE.kernels
    before = _loaded_openmp_runtimes()
    foreign_runtime = _global_openmp_symbols()
    user_passive = _user_asked_passive()
    if user_passive:
        from convlab import _kernels
    else:
        with _environment("OMP_WAIT_POLICY", "PASSIVE"):
            from convlab import _kernels
    after = _loaded_openmp_runtimes()
    # Our runtime waits passively if the import started it (a runtime appeared that was not
    # there before) and no global runtime intercepts the kernels' calls.
    started_here = before is not None and bool(after - before)
    passive = user_passive or (started_here and not foreign_runtime)
    _STATE.parallel_loops = _kernels.openmp_enabled() and passive
    _STATE.kernels = _kernels
    _apply_kernel_threads()
    return _kernels

