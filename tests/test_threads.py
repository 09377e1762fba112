"""The kernels' thread policy (convlab._threads): decided where the kernels load, no change
to the process environment, single-threaded under a foreign busy-waiting OpenMP runtime."""

import json
import os
import platform
import subprocess
import sys

import pytest

from convlab import _threads

PROBE = """
import json, os, sys
before = dict(os.environ)
for name in sys.argv[1:]:
    __import__(name)
import convlab
after_convlab = dict(os.environ)
from convlab import fast_layers
print(json.dumps({
    "convlab_changed_env": after_convlab != before,
    "kernels_changed_env": dict(os.environ) != before,
    "threads": fast_layers._kernels.get_num_threads(),
    "openmp": fast_layers._kernels.openmp_enabled(),
}))
"""


def probe(*first_imports, **env):
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    environment.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE, *first_imports], env=environment,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_import_leaves_the_environment_alone():
    result = probe(OMP_NUM_THREADS="3")
    assert not result["convlab_changed_env"] and not result["kernels_changed_env"]
    # Nothing else started an OpenMP runtime: the kernels' own waits passively.
    assert result["threads"] == (3 if result["openmp"] else 1)


def test_user_choices_are_honoured():
    result = probe(OMP_WAIT_POLICY="passive", OMP_NUM_THREADS="2")
    assert result["threads"] == (2 if result["openmp"] else 1)


def test_a_foreign_openmp_runtime_keeps_the_kernels_serial():
    pytest.importorskip("torch")
    # torch exports its libgomp globally, started with the default (spinning) wait policy.
    assert probe("torch", OMP_NUM_THREADS="2")["threads"] == 1
    result = probe("torch", OMP_NUM_THREADS="2", OMP_WAIT_POLICY="passive")
    assert result["threads"] == (2 if result["openmp"] else 1)


def test_requested_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "5,2")
    assert _threads.requested_threads() == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "zero")
    assert _threads.requested_threads() == _threads._cpu_count()


# ----------------------------------------------------------------------------- thread count


@pytest.fixture
def restore_threads():
    """Put the thread count (and the BLAS limit) back as it was."""
    requested = _threads._STATE.requested
    blas = _threads._blas_threads()
    yield
    _threads.set_num_threads(blas)
    _threads._STATE.requested = requested
    _threads._apply_kernel_threads()


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                        ("2", TypeError), (True, TypeError)])
def test_set_num_threads_rejects_what_is_not_a_count(bad, error):
    import convlab

    with pytest.raises(error, match="threads must be an integer >= 1"):
        convlab.set_num_threads(bad)


def test_set_num_threads_sets_the_kernels_the_workers_and_the_blas(restore_threads):
    import convlab
    from convlab import fast_layers

    convlab.set_num_threads(1)
    assert convlab.get_num_threads() == 1 and _threads._blas_threads() == 1
    assert fast_layers._kernels.get_num_threads() == 1 and _threads.chunk_workers(8) == 1
    convlab.set_num_threads(2)
    assert convlab.get_num_threads() == 2 and _threads._blas_threads() == 2
    assert _threads.chunk_workers(8) == 2 and _threads.chunk_workers(1) == 1
    if _threads._STATE.parallel_loops:
        assert fast_layers._kernels.get_num_threads() == 2


def test_threadpoolctl_limits_are_honoured(restore_threads):
    from threadpoolctl import threadpool_limits

    _threads.set_num_threads(2)
    with threadpool_limits(limits=1, user_api="blas"):
        assert _threads.chunk_workers(8) == 1
    assert _threads.chunk_workers(8) == 2


def test_map_chunks_keeps_chunk_order_and_restores_the_blas(restore_threads):
    _threads.set_num_threads(2)
    seen = []

    def fn(n0, nc, threads):
        seen.append(threads)
        assert _threads._blas_threads() == 1  # each chunk computes on one core
        return n0 * 10 + nc

    chunks = [(0, 2), (2, 2), (4, 1), (5, 3), (8, 1)]
    assert _threads.map_chunks(fn, chunks) == [2, 22, 41, 53, 81]
    assert seen == [1] * 5 and _threads._blas_threads() == 2

    def fail(n0, nc, threads):
        raise ValueError(f"chunk {n0}")

    with pytest.raises(ValueError, match="chunk"):
        _threads.map_chunks(fail, chunks)
    assert _threads._blas_threads() == 2


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("a_shape, b_shape, transposed", [
    ((64, 30), (30, 10), False), ((1, 8), (8, 5), False), ((2, 3), (3, 4), False),
    ((0, 4), (4, 3), False), ((12, 40), (12, 7), True)])
def test_matmul_on_the_workers_equals_numpy(restore_threads, threads, a_shape, b_shape,
                                            transposed):
    import numpy as np

    _threads.set_num_threads(threads)
    rng = np.random.default_rng(threads)
    a = rng.standard_normal(a_shape)
    a = a.T if transposed else a  # a strided view, as dw = x.T @ dout passes
    b = rng.standard_normal(b_shape)
    np.testing.assert_allclose(_threads.matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)
    assert _threads.matmul(a.astype(np.float32), b.astype(np.float32)).dtype == np.float32


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape", [(5, 3, 7, 11), (1, 4), (3, 0), (4, 70_001)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sum_stack_adds_in_stack_order_whatever_the_split(restore_threads, monkeypatch, threads,
                                                          shape, dtype):
    import numpy as np

    _threads.set_num_threads(threads)
    monkeypatch.setattr(_threads, "_SUM_PIECE", 8)  # pieces of small stacks too
    rng = np.random.default_rng(threads)
    # Terms of very different sizes, so that another order of additions rounds otherwise.
    stack = (rng.standard_normal(shape) * 10.0 ** rng.integers(-8, 8, shape)).astype(dtype)
    total = _threads.sum_stack(stack)
    assert total.shape == shape[1:] and total.dtype == stack.dtype
    assert np.array_equal(total, np.add.reduce(stack, axis=0))
    by_hand = stack[0].copy()
    for term in stack[1:]:
        by_hand += term
    assert np.array_equal(total, by_hand)


def test_workers_handle_floating_point_errors_as_the_caller_asked(restore_threads):
    import warnings

    import numpy as np

    _threads.set_num_threads(2)
    a, b = np.full((8, 2), 1e300), np.full((2, 3), 1e300)  # every product overflows
    with np.errstate(over="raise"), pytest.raises(FloatingPointError, match="overflow"):
        _threads.matmul(a, b)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isinf(_threads.matmul(a, b)).all()
    with np.errstate(over="warn"), pytest.warns(RuntimeWarning, match="overflow"):
        _threads.matmul(a, b)


@pytest.mark.parametrize("spec", ["reference", "threelayer"])
def test_a_training_step_runs_every_gemm_with_the_blas_on_one_thread(restore_threads,
                                                                    monkeypatch, spec):
    """At 2 threads every np.matmul of a step runs on a chunk worker with OpenBLAS held to
    one thread: a multithreaded call would leave OpenBLAS's threads spinning on the cores
    the next layer's workers need (module docstring of convlab._threads)."""
    import numpy as np

    from convlab.classifiers import ConvNet
    from convlab.classifiers.cnn import ThreeLayerConvNet

    _threads.set_num_threads(2)
    blas_threads, matmul = [], np.matmul

    def recording_matmul(*args, **kwargs):
        blas_threads.append(_threads._blas_threads())
        return matmul(*args, **kwargs)

    model = (ConvNet("reference", seed=0) if spec == "reference"
             else ThreeLayerConvNet(weight_scale=1e-2, dtype=np.float32, seed=0))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 3, 32, 32)).astype(np.float32)
    monkeypatch.setattr(np, "matmul", recording_matmul)
    model.loss(X, rng.integers(10, size=6))
    monkeypatch.undo()
    assert blas_threads and set(blas_threads) == {1}


def test_convolutions_do_not_depend_on_the_thread_count(restore_threads):
    """Chunk workers change who computes a chunk, not what: the same results on 1 and 2
    threads (to float32 round-off: the chunks, and so the BLAS kernels picked for their
    sizes, differ), and bitwise the same on every run with the same count."""
    import numpy as np

    from convlab import fast_layers as fl

    def run():
        rng = np.random.default_rng(0)
        results = []
        for C, K in ((16, 3), (3, 5)):  # Winograd, im2col
            x = rng.standard_normal((9, C, 8, 7)).astype(np.float32)
            w = rng.standard_normal((4, C, K, K)).astype(np.float32)
            b = rng.standard_normal(4).astype(np.float32)
            out, cache = fl.conv_forward_fast(x, w, b, {"stride": 1, "pad": 1})
            results += [out, *fl.conv_backward_fast(np.ones_like(out), cache)]
        return results

    _threads.set_num_threads(1)
    serial = run()
    _threads.set_num_threads(2)
    parallel, again = run(), run()
    for a, b, c in zip(serial, parallel, again, strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * np.abs(a).max())
        np.testing.assert_array_equal(b, c)


def test_cli_threads_option(tmp_path):
    from convlab.train import build_parser

    args = build_parser().parse_args(["--threads", "3"])
    assert args.threads == 3
    result = subprocess.run([sys.executable, "-m", "convlab.train", "--threads", "0",
                             "--data", "builtin", "--out", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "convlab-train: error: threads must be an integer >= 1, got 0"]


# ------------------------------------------------------------------------------- heap

HEAP_PROBE = """
import sys
import numpy as np
if sys.argv[1] == "convlab":
    import convlab.fast_layers
a = np.ones(20 << 20, dtype=np.uint8)  # 20 MB: above glibc's own threshold, below 32 MB
with open("/proc/self/maps") as maps:
    heap = [line.split()[0] for line in maps if line.rstrip().endswith("[heap]")]
start, end = (int(v, 16) for v in heap[0].split("-")) if heap else (0, 0)
print(start <= a.ctypes.data < end)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="the heap policy is glibc's mallopt")
@pytest.mark.parametrize("first, env, in_heap", [
    ("numpy", {}, False),          # glibc alone maps a fresh 20 MB block of its own
    ("convlab", {}, True),         # convlab keeps blocks up to 32 MB in the heap
    ("convlab", {"MALLOC_TOP_PAD_": "131072"}, False),  # the user's malloc settings win
])
def test_freed_memory_stays_in_the_heap(first, env, in_heap):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environment.update(env)
    out = subprocess.run([sys.executable, "-c", HEAP_PROBE, first], env=environment,
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(in_heap)]
