"""Benchmark convlab's fast conv/pool layers against the GEMM floor and PyTorch (if installed).

Usage:
    python benchmarks/bench_layers.py [--threads 2] [--dtype float32 float64] [--repeats 20]

Prints markdown tables (medians in milliseconds, all measured in the same run): conv
forward/backward for four CIFAR-sized shapes next to the bare np.matmul time of the GEMMs
any im2col design must do and to PyTorch CPU; 2x2 max pooling forward+backward; one
ThreeLayerConvNet training iteration; peak memory.

convlab's OpenMP kernels run in parallel only when libgomp waits passively (see
convlab.fast_layers), so by default this script sets OMP_WAIT_POLICY=PASSIVE before any
import. PyTorch's wheel ships a libgomp.so.1 that convlab then shares, so the policy applies
to both libraries; --omp-wait-policy default measures libgomp's spinning default instead
(convlab's kernels then run single-threaded).
"""

import argparse
import os
import sys
import time
import tracemalloc

CONV_SHAPES = [  # (C, H, W, F, k, pad, stride); the batch size is --batch
    (3, 32, 32, 32, 3, 1, 1),
    (32, 16, 16, 64, 3, 1, 1),
    (64, 8, 8, 128, 3, 1, 1),
    (3, 32, 32, 32, 7, 3, 1),
]
POOL_SHAPE = (64, 32, 32, 32)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP/torch threads")
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"],
                        choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per median")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--omp-wait-policy", default="passive", choices=["passive", "default"],
                        help="OpenMP wait policy of the shared libgomp (default: passive)")
    return parser.parse_args()


def configure_threads(threads, wait_policy):
    """Thread pools read these when they start, so this must run before importing numpy."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    # An empty value is libgomp's default and stops `import convlab` from choosing PASSIVE.
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE" if wait_policy == "passive" else ""


ARGS = parse_args()
configure_threads(ARGS.threads, ARGS.omp_wait_policy)

import numpy as np  # noqa: E402

try:
    import torch
    import torch.nn.functional as tF

    torch.set_num_threads(ARGS.threads)
except ImportError:
    torch = None

from convlab import fast_layers  # noqa: E402


def medians_ms(fns, repeats, warmup=3):
    """Median milliseconds of each function (None stays None), one function at a time.

    Each function gets its own warm-up: PyTorch's OpenMP workers busy-wait for a while after
    every op, so timing libraries round-robin would charge that spin to the next one.
    """
    return [None if fn is None else _median_ms(fn, repeats, warmup) for fn in fns]


def _median_ms(fn, repeats, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def fmt(value):
    return "—" if value is None else f"{value:.2f}"


def ratio(a, b):
    return "—" if a is None or b is None else f"{a / b:.2f}×"


def total(values):
    return None if any(v is None for v in values) else sum(values)


# ---------------------------------------------------------------------------- convolution


def convlab_conv(x, w, b, conv_param):
    """(forward, backward) callables of conv_forward_fast / conv_backward_fast."""
    out, cache = fast_layers.conv_forward_fast(x, w, b, conv_param)
    dout = np.random.default_rng(1).standard_normal(out.shape).astype(x.dtype)
    return (lambda: fast_layers.conv_forward_fast(x, w, b, conv_param),
            lambda: fast_layers.conv_backward_fast(dout, cache))


def gemm_floor(N, C, F, k, Ho, Wo, dtype):
    """The GEMMs of an im2col convolution: out = W cols; dW^T = cols dout^T; dcols = W^T dout.

    dW is computed transposed, as convlab does, because OpenBLAS's threads handle that
    orientation much better on a busy machine.
    """
    K, M = C * k * k, N * Ho * Wo
    rng = np.random.default_rng(2)
    w_rows = rng.standard_normal((F, K)).astype(dtype)
    cols = rng.standard_normal((K, M)).astype(dtype)
    grad_rows = rng.standard_normal((F, M)).astype(dtype)
    out, dw, dcols = np.empty((F, M), dtype), np.empty((K, F), dtype), np.empty((K, M), dtype)

    def backward():
        np.matmul(cols, grad_rows.T, out=dw)
        np.matmul(w_rows.T, grad_rows, out=dcols)

    return lambda: np.matmul(w_rows, cols, out=out), backward


def torch_conv(x, w, b, pad, stride):
    if torch is None:
        return None, None
    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_()
    out = tF.conv2d(xt, wt, bt, stride=stride, padding=pad)
    dout = torch.randn_like(out)
    return (lambda: tF.conv2d(xt, wt, bt, stride=stride, padding=pad),
            lambda: torch.autograd.grad(out, (xt, wt, bt), dout, retain_graph=True))


def conv_table(dtypes, batch, repeats):
    lines = [
        "| conv (N,C,H,W→F,k,pad,stride) | dtype | convlab fwd | convlab bwd "
        "| GEMM floor fwd | GEMM floor bwd | torch fwd | torch bwd "
        "| convlab/GEMM floor | convlab/torch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rng = np.random.default_rng(0)
    for dtype in dtypes:
        rows = []
        for C, H, W, F, k, pad, stride in CONV_SHAPES:
            x = rng.standard_normal((batch, C, H, W)).astype(dtype)
            w = (0.1 * rng.standard_normal((F, C, k, k))).astype(dtype)
            b = rng.standard_normal(F).astype(dtype)
            Ho, Wo = 1 + (H + 2 * pad - k) // stride, 1 + (W + 2 * pad - k) // stride
            fns = [*convlab_conv(x, w, b, {"stride": stride, "pad": pad}),
                   *gemm_floor(batch, C, F, k, Ho, Wo, dtype),
                   *torch_conv(x, w, b, pad, stride)]
            row = medians_ms(fns, repeats)
            rows.append(row)
            lines.append(_conv_row(f"({batch},{C},{H},{W}→{F},{k},{pad},{stride})", dtype, row))
        sums = [total(column) for column in zip(*rows, strict=True)]
        lines.append(_conv_row("**sum of the 4**", dtype, sums))
    return "\n".join(lines)


def _conv_row(label, dtype, row):
    ours_fwd, ours_bwd, floor_fwd, floor_bwd, torch_fwd, torch_bwd = row
    ours = ours_fwd + ours_bwd
    floor = floor_fwd + floor_bwd
    theirs = total([torch_fwd, torch_bwd])
    return (f"| {label} | {dtype} | " + " | ".join(fmt(v) for v in row)
            + f" | {ratio(ours, floor)} | {ratio(ours, theirs)} |")


# -------------------------------------------------------------------------------- pooling


def pool_round_trips(dtype):
    """max pool 2x2/2 forward+backward callables: convlab fast, convlab reshape, torch."""
    param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    rng = np.random.default_rng(3)
    x = rng.standard_normal(POOL_SHAPE).astype(dtype)
    N, C, H, W = POOL_SHAPE
    dout = rng.standard_normal((N, C, H // 2, W // 2)).astype(dtype)

    def round_trip(forward, backward):
        _, cache = forward(x, param)
        backward(dout, cache)

    fast = lambda: round_trip(fast_layers.max_pool_forward_fast,
                              fast_layers.max_pool_backward_fast)
    reshape = lambda: round_trip(fast_layers.max_pool_forward_reshape,
                                 fast_layers.max_pool_backward_reshape)
    if torch is None:
        return [fast, reshape, None]
    xt, dt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dout)
    return [fast, reshape, lambda: torch.autograd.grad(tF.max_pool2d(xt, 2, 2), xt, dt)]


def pool_table(dtypes, repeats):
    lines = [
        f"| max pool 2×2/2 fwd+bwd on {POOL_SHAPE} | dtype | convlab fast | convlab reshape "
        "| torch | fast/torch |",
        "|---|---|---|---|---|---|",
    ]
    for dtype in dtypes:
        fast, reshape, theirs = medians_ms(pool_round_trips(dtype), repeats)
        lines.append(f"| | {dtype} | {fmt(fast)} | {fmt(reshape)} | {fmt(theirs)} "
                     f"| {ratio(fast, theirs)} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------- ThreeLayerConvNet


def load_three_layer_convnet():
    try:
        from convlab.classifiers.cnn import ThreeLayerConvNet
    except ImportError as error:
        print(f"(skipping the ThreeLayerConvNet rows: {error})", file=sys.stderr)
        return None
    return ThreeLayerConvNet


def convlab_three_layer_step(net_class, dtype, batch):
    model = net_class(dtype=getattr(np, dtype))
    rng = np.random.default_rng(4)
    X = rng.standard_normal((batch, 3, 32, 32)).astype(dtype)
    y = rng.integers(0, 10, batch)
    return lambda: model.loss(X, y)


def torch_three_layer_step(dtype, batch):
    """conv7x7x32(pad 3)-relu-maxpool2-affine100-relu-affine10-softmax, forward + backward."""
    if torch is None:
        return None
    tdtype = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    params = [
        1e-3 * torch.randn(32, 3, 7, 7, generator=gen, dtype=tdtype),
        torch.zeros(32, dtype=tdtype),
        1e-3 * torch.randn(100, 32 * 16 * 16, generator=gen, dtype=tdtype),
        torch.zeros(100, dtype=tdtype),
        1e-3 * torch.randn(10, 100, generator=gen, dtype=tdtype),
        torch.zeros(10, dtype=tdtype),
    ]
    for p in params:
        p.requires_grad_()
    X = torch.randn(batch, 3, 32, 32, generator=gen, dtype=tdtype)
    y = torch.randint(0, 10, (batch,), generator=gen)

    def step():
        w1, b1, w2, b2, w3, b3 = params
        h = tF.max_pool2d(tF.relu(tF.conv2d(X, w1, b1, padding=3)), 2, 2)
        h = tF.relu(tF.linear(h.flatten(1), w2, b2))
        loss = tF.cross_entropy(tF.linear(h, w3, b3), y)
        torch.autograd.grad(loss, params)

    return step


def traced_peak_mib(fn):
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def convnet_table(dtypes, batch, repeats):
    net_class = load_three_layer_convnet()
    if net_class is None:
        return "(ThreeLayerConvNet not available: convlab.classifiers.cnn is missing)"
    lines = [
        f"| ThreeLayerConvNet train iteration (batch {batch}) | dtype | convlab | torch "
        "| convlab/torch | convlab peak allocations |",
        "|---|---|---|---|---|---|",
    ]
    for dtype in dtypes:
        ours_step = convlab_three_layer_step(net_class, dtype, batch)
        ours, theirs = medians_ms(
            [ours_step, torch_three_layer_step(dtype, batch)], repeats
        )
        lines.append(f"| | {dtype} | {fmt(ours)} | {fmt(theirs)} | {ratio(ours, theirs)} "
                     f"| {traced_peak_mib(ours_step):.0f} MiB |")
    return "\n".join(lines)


def peak_rss_mib():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    torch_note = f"torch {torch.__version__}" if torch is not None else "torch not installed"
    print(f"threads={ARGS.threads}, batch={ARGS.batch}, repeats={ARGS.repeats}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"numpy {np.__version__}, {torch_note}; medians in ms\n")
    print(conv_table(ARGS.dtype, ARGS.batch, ARGS.repeats) + "\n")
    print(pool_table(ARGS.dtype, ARGS.repeats) + "\n")
    print(convnet_table(ARGS.dtype, ARGS.batch, ARGS.repeats) + "\n")
    print(f"peak RSS of the whole benchmark process: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
