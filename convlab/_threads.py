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

Thread count when parallel: OMP_NUM_THREADS if set, else one per CPU this process may use.
"""

import ctypes
import os
from contextlib import contextmanager

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


def load_kernels():
    """Import convlab._kernels under a passive OpenMP wait policy and set its thread count
    by the policy above. Returns the module."""
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
    parallel = _kernels.openmp_enabled() and passive
    _kernels.set_num_threads(requested_threads() if parallel else 1)
    return _kernels
