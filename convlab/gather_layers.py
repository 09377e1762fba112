"""Convolution and pooling as gathers and batched GEMMs, on any array module.

The compiled kernels of convlab.fast_layers are CPU code; these functions are the fast path
for arrays on a GPU (CuPy 14 has no cuDNN, so im2col + cuBLAS GEMM is the route), written
against ``xp`` so that CI runs the very same lines on NumPy. The contracts are those of the
naive layers: x (N, C, H, W), w (F, C, HH, WW), b (F,) or None, out (N, F, H', W').

Both directions are gathers through index arrays worked out once per geometry:

- im2col: ``cols[n, k, p] = x[n, gather[k, p]]`` with x flattened to (N, C H W) and one
  zero appended, so the padding is an index (C H W) that reads that zero;
- col2im, its adjoint: every input value sums the column entries that read it,
  ``dx[n, q] = sum_t dcols[n, scatter[q, t]]``, with dcols flattened to (N, K P) plus a
  zero for the slots a border value does not fill. Each output is one thread's own sum:
  no scatter-add, so no atomics and the same result on every run.
"""

import functools

import numpy as np

from convlab._checks import (
    as_float_array,
    check_conv_operands,
    check_dout,
    check_int,
    check_pool_input,
    conv_output_size,
)
from convlab.backend import device_of, get_array_module

__all__ = [
    "col2im_gather",
    "conv_backward_gather",
    "conv_forward_gather",
    "im2col_gather",
    "max_pool_backward_gather",
    "max_pool_forward_gather",
    "avg_pool_backward_gather",
    "avg_pool_forward_gather",
]


# ============================================================================ indices


@functools.lru_cache(maxsize=64)
def _host_indices(C, H, W, fh, fw, pad, stride):
    """(gather (K, P), scatter (C H W, T)) int64 index arrays of one geometry, on the host;
    K = C fh fw, P = H' W', T the most column entries any input value feeds."""
    Ho, Wo = conv_output_size(H, W, fh, fw, stride, pad)
    K, P, Q = C * fh * fw, Ho * Wo, C * H * W
    # Row k = (c fh + i) fw + j of the columns reads channel c at offset (i, j) of a field;
    # column p = h' W' + w' is the field whose corner is (h' stride - pad, w' stride - pad).
    c = np.repeat(np.arange(C), fh * fw)[:, None]          # (K, 1)
    i = np.tile(np.repeat(np.arange(fh), fw), C)[:, None]  # (K, 1)
    j = np.tile(np.arange(fw), fh * C)[:, None]            # (K, 1)
    h = np.repeat(np.arange(Ho), Wo)[None, :] * stride + i - pad  # (K, P)
    w = np.tile(np.arange(Wo), Ho)[None, :] * stride + j - pad     # (K, P)
    inside = (h >= 0) & (h < H) & (w >= 0) & (w < W)
    gather = np.where(inside, (c * H + h) * W + w, Q)

    # Invert the gather: sort the entries e = k P + p by the value they read, then lay
    # each value's entries out in a row of its own, padded with the zero slot K P.
    reads = gather.ravel()
    entries = np.flatnonzero(reads < Q)
    targets = reads[entries]
    order = np.argsort(targets, kind="stable")
    entries, targets = entries[order], targets[order]
    counts = np.bincount(targets, minlength=Q)
    slots = np.arange(targets.size) - (np.cumsum(counts) - counts)[targets]
    scatter = np.full((Q, int(counts.max(initial=0))), K * P, dtype=np.int64)
    scatter[targets, slots] = entries
    return gather, scatter


@functools.lru_cache(maxsize=64)
def _device_indices(xp, device, geometry):
    """_host_indices(*geometry) as arrays of ``xp`` on ``device``. A memo of constants:
    one host-to-device copy per geometry instead of one per call."""
    gather, scatter = _host_indices(*geometry)
    if xp is np:
        return gather, scatter
    with xp.cuda.Device(int(device.split(":")[1])):
        return xp.asarray(gather), xp.asarray(scatter)


def _indices(x, C, H, W, fh, fw, pad, stride):
    xp = get_array_module(x)
    return _device_indices(xp, device_of(x), (C, H, W, fh, fw, pad, stride))


def _with_zero(a):
    """a (N, M) with a column of zeros appended: (N, M + 1), the target of the pad index."""
    xp = get_array_module(a)
    return xp.concatenate([a, xp.zeros((a.shape[0], 1), dtype=a.dtype)], axis=1)


def _im2col(x, gather):
    """x (N, C, H, W) -> cols (N, K, P)."""
    return _with_zero(x.reshape(x.shape[0], -1))[:, gather]


def _col2im(dcols, scatter, x_shape):
    """dcols (N, K, P) -> dx of x_shape (N, C, H, W), the adjoint of _im2col."""
    N = dcols.shape[0]
    return _with_zero(dcols.reshape(N, -1))[:, scatter].sum(axis=2).reshape(x_shape)


def im2col_gather(x, field_height, field_width, padding, stride):
    """Columns (N, C fh fw, H' W') of x (N, C, H, W): entry [n, (c fh + i) fw + j, h' W' + w']
    is x[n, c, h' stride + i - padding, w' stride + j - padding], zero in the padding."""
    x = as_float_array(x, "x", ndim=4)
    _, C, H, W = x.shape
    check_int(field_height, "field_height", 1)
    check_int(field_width, "field_width", 1)
    conv_output_size(H, W, field_height, field_width, stride, padding)  # checks the fit
    gather, _ = _indices(x, C, H, W, field_height, field_width, padding, stride)
    return _im2col(x, gather)


def col2im_gather(cols, x_shape, field_height, field_width, padding, stride):
    """Adjoint of im2col_gather: cols (N, C fh fw, H' W') summed back into an array of
    x_shape (N, C, H, W)."""
    N, C, H, W = x_shape
    check_int(field_height, "field_height", 1)
    check_int(field_width, "field_width", 1)
    Ho, Wo = conv_output_size(H, W, field_height, field_width, stride, padding)
    cols = check_dout(as_float_array(cols, "cols"), (N, C * field_height * field_width, Ho * Wo))
    _, scatter = _indices(cols, C, H, W, field_height, field_width, padding, stride)
    return _col2im(cols, scatter, tuple(x_shape))


# ======================================================================== convolution


def conv_forward_gather(x, w, b, conv_param):
    """Convolution as a gather im2col and one batched GEMM, (F, K) @ (N, K, P) -> (N, F, P),
    which lands in NCHW order with no transpose. The cache keeps the columns.

    x: (N, C, H, W), w: (F, C, HH, WW), b: (F,) or None. Returns out (N, F, H', W'), cache.
    """
    x, w, b, (stride, pad, Ho, Wo) = check_conv_operands(x, w, b, conv_param)
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    gather, _ = _indices(x, C, H, W, HH, WW, pad, stride)
    cols = _im2col(x, gather)              # (N, K, P)
    out = w.reshape(F, -1) @ cols          # (N, F, P)
    if b is not None:
        out += b[:, None]
    return out.reshape(N, F, Ho, Wo), (x.shape, w, b is not None, stride, pad, cols)


def conv_backward_gather(dout, cache, need_dx=True):
    """dout: (N, F, H', W'). Returns dx (N, C, H, W) (None without need_dx), dw, db."""
    x_shape, w, has_bias, stride, pad, cols = cache
    N, C, H, W = x_shape
    F, _, HH, WW = w.shape
    Ho, Wo = conv_output_size(H, W, HH, WW, stride, pad)
    xp = get_array_module(cols)
    dout_rows = check_dout(dout, (N, F, Ho, Wo)).reshape(N, F, Ho * Wo)
    # dw[f, k] = sum over samples and positions of dout[n, f, p] cols[n, k, p].
    dw = xp.tensordot(dout_rows, cols, axes=([0, 2], [0, 2])).reshape(w.shape)
    db = dout_rows.sum(axis=(0, 2)) if has_bias else None
    dx = None
    if need_dx:
        dcols = w.reshape(F, -1).T @ dout_rows  # (K, F) @ (N, F, P) -> (N, K, P)
        _, scatter = _indices(cols, C, H, W, HH, WW, pad, stride)
        dx = _col2im(dcols, scatter, x_shape)
    return dx, dw, db


# ============================================================================ pooling


def _pool_windows(x, pool_param):
    """x's pooling windows as (N C, ph pw, H' W'), each plane a one-channel image, and the
    geometry (ph, pw, stride, H', W')."""
    x, geometry = check_pool_input(x, pool_param)
    N, C, H, W = x.shape
    ph, pw, stride = geometry[:3]
    gather, _ = _indices(x, 1, H, W, ph, pw, 0, stride)
    return x, _im2col(x.reshape(N * C, 1, H, W), gather), geometry


def _unpool(dwindows, x_shape, geometry):
    """Window gradients (N C, ph pw, H' W') summed back into dx of x_shape (N, C, H, W)."""
    N, C, H, W = x_shape
    ph, pw, stride = geometry[:3]
    _, scatter = _indices(dwindows, 1, H, W, ph, pw, 0, stride)
    return _col2im(dwindows, scatter, (N * C, 1, H, W)).reshape(x_shape)


def max_pool_forward_gather(x, pool_param):
    """Max pooling over gathered windows; the cache holds the position of each window's
    first maximum (a NaN counts as the maximum, as in np.max). Returns out (N, C, H', W')."""
    x, windows, geometry = _pool_windows(x, pool_param)
    N, C = x.shape[:2]
    Ho, Wo = geometry[3:]
    xp = get_array_module(x)
    first_max = windows.argmax(axis=1)[:, None, :]  # (N C, 1, P)
    out = xp.take_along_axis(windows, first_max, axis=1)
    return out.reshape(N, C, Ho, Wo), (x.shape, x.dtype, geometry, first_max)


def max_pool_backward_gather(dout, cache):
    """Each output gradient goes to its window's first maximum. Returns dx (N, C, H, W)."""
    x_shape, dtype, geometry, first_max = cache
    N, C = x_shape[:2]
    ph, pw, _, Ho, Wo = geometry
    xp = get_array_module(first_max)
    dout = check_dout(dout, (N, C, Ho, Wo), dtype).reshape(N * C, 1, Ho * Wo)
    is_max = xp.arange(ph * pw)[None, :, None] == first_max  # (N C, ph pw, P)
    return _unpool(is_max * dout, x_shape, geometry)


def avg_pool_forward_gather(x, pool_param):
    """Average pooling over gathered windows. Returns out (N, C, H', W'), cache."""
    x, windows, geometry = _pool_windows(x, pool_param)
    N, C = x.shape[:2]
    return windows.mean(axis=1).reshape(N, C, *geometry[3:]), (x.shape, x.dtype, geometry)


def avg_pool_backward_gather(dout, cache):
    """Each output gradient spread evenly over its window. Returns dx (N, C, H, W)."""
    x_shape, dtype, geometry = cache
    N, C = x_shape[:2]
    ph, pw, _, Ho, Wo = geometry
    xp = get_array_module(dout)
    share = check_dout(dout, (N, C, Ho, Wo), dtype).reshape(N * C, 1, Ho * Wo)
    dwindows = xp.broadcast_to(share / (ph * pw), (N * C, ph * pw, Ho * Wo))
    return _unpool(dwindows, x_shape, geometry)
