"""convlab.fast_layers: equal to the naive layers, correct gradients, dtypes kept, clear errors."""

import math
import re
import threading

import numpy as np
import pytest
from conftest import check_layer_gradients
from hypothesis import given, settings
from hypothesis import strategies as st

from convlab import fast_layers as fl
from convlab.gradient_check import eval_numerical_gradient_array, rel_error
from convlab.layers import (
    affine_backward,
    affine_forward,
    avg_pool_backward_naive,
    avg_pool_forward_naive,
    conv_backward_naive,
    conv_forward_naive,
    max_pool_backward_naive,
    max_pool_forward_naive,
    relu_backward,
    relu_forward,
)

CONV_VARIANTS = [
    (fl.conv_forward_fast, fl.conv_backward_fast),
    (fl.conv_forward_im2col, fl.conv_backward_im2col),
    (fl.conv_forward_strides, fl.conv_backward_strides),
]
MAX_POOL_VARIANTS = [
    (fl.max_pool_forward_fast, fl.max_pool_backward_fast),
    (fl.max_pool_forward_im2col, fl.max_pool_backward_im2col),
]
HYPOTHESIS = settings(max_examples=30, deadline=None)


@pytest.fixture
def rng():
    return np.random.default_rng(231)


# -------------------------------------------------------------------- NumPy references


def im2col_reference(x, fh, fw, pad, stride):
    """cs231n layout by explicit loops: row (c, i, j), column (h', w', n)."""
    N, C, H, W = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho, Wo = 1 + (H + 2 * pad - fh) // stride, 1 + (W + 2 * pad - fw) // stride
    cols = np.empty((C * fh * fw, Ho * Wo * N), dtype=x.dtype)
    for c in range(C):
        for i in range(fh):
            for j in range(fw):
                for yo in range(Ho):
                    for xo in range(Wo):
                        col = (yo * Wo + xo) * N
                        cols[(c * fh + i) * fw + j, col:col + N] = padded[
                            :, c, yo * stride + i, xo * stride + j
                        ]
    return cols


def col2im_reference(cols, N, C, H, W, fh, fw, pad, stride):
    Ho, Wo = 1 + (H + 2 * pad - fh) // stride, 1 + (W + 2 * pad - fw) // stride
    padded = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)
    for c in range(C):
        for i in range(fh):
            for j in range(fw):
                for yo in range(Ho):
                    for xo in range(Wo):
                        col = (yo * Wo + xo) * N
                        padded[:, c, yo * stride + i, xo * stride + j] += cols[
                            (c * fh + i) * fw + j, col:col + N
                        ]
    return padded[:, :, pad:pad + H, pad:pad + W]


def distinct_values(rng, shape, spacing=1e-2):
    """Shuffled, evenly spaced values: no ties in a pooling window, even under a ±1e-5 probe."""
    values = rng.permutation(int(np.prod(shape))) * spacing
    return (values - values.mean()).reshape(shape)


def relative_to(reference, value):
    """max |value - reference| / max |reference|: the error scale of a float32 result."""
    scale = max(np.abs(reference).max(), 1e-30)
    return np.abs(np.asarray(value, np.float64) - reference).max() / scale


# ------------------------------------------------------------------------ strategies


@st.composite
def conv_geometries(draw):
    """(N, C, H, W, F, HH, WW, stride, pad) whose filter fits the padded input."""
    HH, WW = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    pad, stride = draw(st.integers(0, 3)), draw(st.integers(1, 3))
    H = draw(st.integers(max(1, HH - 2 * pad), HH - 2 * pad + 8))
    W = draw(st.integers(max(1, WW - 2 * pad), WW - 2 * pad + 8))
    N, C, F = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    return N, C, H, W, F, HH, WW, stride, pad


@st.composite
def pool_geometries(draw):
    """(N, C, H, W, pool_height, pool_width, stride), windows tiling the input or not."""
    ph, pw, stride = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    H, W = draw(st.integers(ph, ph + 7)), draw(st.integers(pw, pw + 7))
    return draw(st.integers(1, 3)), draw(st.integers(1, 4)), H, W, ph, pw, stride


def conv_inputs(rng, geometry, dtype=np.float64):
    N, C, H, W, F, HH, WW, stride, pad = geometry
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, HH, WW)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    return x, w, b, {"stride": stride, "pad": pad}


# ------------------------------------------------------------------------- affine


@pytest.mark.parametrize("x_shape, M", [((7, 3, 5), 6), ((1, 4), 3), ((2, 9), 1), ((0, 5), 4),
                                        ((33, 2, 2, 2), 17)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_affine_fast_matches_the_readable_layer(rng, threads, x_shape, M, dtype):
    D = int(np.prod(x_shape[1:]))
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal((D, M)).astype(dtype)
    b = rng.standard_normal(M).astype(dtype)
    out, cache = fl.affine_forward_fast(x, w, b)
    ref, ref_cache = affine_forward(x, w, b)
    dout = rng.standard_normal(out.shape).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    for got, want in zip((out, *fl.affine_backward_fast(dout, cache)),
                         (ref, *affine_backward(dout, ref_cache)), strict=True):
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_affine_fast_gradients_numerically(rng, threads):
    inputs = (rng.standard_normal((5, 2, 3)), rng.standard_normal((6, 4)), rng.standard_normal(4))
    check_layer_gradients(fl.affine_forward_fast, fl.affine_backward_fast, inputs, rng)


@pytest.mark.parametrize("w_shape, b_shape, match", [((7, 4), (4,), r"w must have shape \(6, M\)"),
                                                     ((6, 4), (3,), r"b must have shape \(4,\)")])
def test_affine_fast_rejects_mismatched_shapes(rng, w_shape, b_shape, match):
    with pytest.raises(ValueError, match=match):
        fl.affine_forward_fast(rng.standard_normal((2, 3, 2)), rng.standard_normal(w_shape),
                               rng.standard_normal(b_shape))


# ------------------------------------------------------------------------- im2col


@HYPOTHESIS
@given(geometry=conv_geometries(), seed=st.integers(0, 2**16))
def test_im2col_and_col2im_match_loop_reference(geometry, seed):
    rng = np.random.default_rng(seed)
    N, C, H, W, _, fh, fw, stride, pad = geometry
    x = rng.standard_normal((N, C, H, W))
    cols = fl.im2col_cython(x, fh, fw, pad, stride)
    np.testing.assert_array_equal(cols, im2col_reference(x, fh, fw, pad, stride))
    dcols = rng.standard_normal(cols.shape)
    np.testing.assert_allclose(
        fl.col2im_cython(dcols, N, C, H, W, fh, fw, pad, stride),
        col2im_reference(dcols, N, C, H, W, fh, fw, pad, stride),
        rtol=1e-12, atol=1e-12,
    )


def test_im2col_layout_is_cs231n():
    # Two samples, one channel, 1x1 field: column (h' W' + w') N + n holds x[n, 0, h', w'].
    x = np.arange(2 * 1 * 2 * 3, dtype=np.float64).reshape(2, 1, 2, 3)
    cols = fl.im2col_cython(x, 1, 1, 0, 1)
    np.testing.assert_array_equal(cols[0], x[:, 0].transpose(1, 2, 0).ravel())


@pytest.mark.parametrize("fh, fw, pad, stride", [(3, 3, 1, 1), (2, 4, 0, 2), (5, 1, 3, 3)])
def test_col2im_is_the_adjoint_of_im2col(rng, fh, fw, pad, stride):
    N, C, H, W = 2, 3, 9, 8
    x = rng.standard_normal((N, C, H, W))
    cols = fl.im2col_cython(x, fh, fw, pad, stride)
    c = rng.standard_normal(cols.shape)
    lhs = np.vdot(cols, c)
    rhs = np.vdot(x, fl.col2im_cython(c, N, C, H, W, fh, fw, pad, stride))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_kernels_keep_float32(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    cols = fl.im2col_cython(x, 3, 3, 1, 1)
    assert cols.dtype == np.float32
    assert fl.col2im_cython(cols, 2, 3, 6, 6, 3, 3, 1, 1).dtype == np.float32


def test_col2im_rejects_wrong_column_shape(rng):
    with pytest.raises(ValueError, match="cols must have shape"):
        fl.col2im_cython(rng.standard_normal((9, 10)), 2, 1, 4, 4, 3, 3, 1, 1)


# ---------------------------------------------------------------------- convolution


@HYPOTHESIS
@given(geometry=conv_geometries(), seed=st.integers(0, 2**16))
def test_conv_variants_match_naive(geometry, seed):
    rng = np.random.default_rng(seed)
    x, w, b, conv_param = conv_inputs(rng, geometry)
    expected, naive_cache = conv_forward_naive(x, w, b, conv_param)
    dout = rng.standard_normal(expected.shape)
    expected_grads = conv_backward_naive(dout, naive_cache)
    for forward, backward in CONV_VARIANTS:
        out, cache = forward(x, w, b, conv_param)
        np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)
        for grad, expected_grad in zip(backward(dout, cache), expected_grads, strict=True):
            np.testing.assert_allclose(grad, expected_grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "geometry",
    [
        (64, 3, 32, 32, 8, 3, 3, 1, 1),  # a full CIFAR batch
        (1, 3, 32, 32, 4, 7, 7, 1, 3),  # batch of one, large filter
        (5, 4, 11, 7, 3, 3, 2, 2, 1),  # odd sizes, non-square filter, stride 2
        (3, 2, 9, 9, 2, 4, 4, 3, 0),  # stride 3 that leaves a border unused
        (2, 6, 4, 4, 5, 1, 1, 1, 0),  # 1x1 convolution
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_fast_matches_naive(rng, geometry, dtype):
    x, w, b, conv_param = conv_inputs(rng, geometry)
    expected, naive_cache = conv_forward_naive(x, w, b, conv_param)
    dout = rng.standard_normal(expected.shape)
    expected_grads = conv_backward_naive(dout, naive_cache)
    cast = lambda a: a.astype(dtype)
    out, cache = fl.conv_forward_fast(cast(x), cast(w), cast(b), conv_param)
    grads = fl.conv_backward_fast(cast(dout), cache)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    assert relative_to(expected, out) < tol
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert relative_to(expected_grad, grad) < tol


@pytest.mark.parametrize("geometry", [
    (6, 5, 4, 7, 3, 1, 1, 1, 0),  # 1x1, stride 1, no padding: a GEMM per sample
    (6, 5, 4, 7, 3, 1, 1, 2, 0),  # 1x1 strided and ...
    (6, 5, 4, 7, 3, 1, 1, 1, 1),  # ... padded: through im2col
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("need_dx", [True, False])
def test_1x1_conv_matches_naive(rng, threads, monkeypatch, geometry, dtype, bias, need_dx):
    x, w, b, conv_param = conv_inputs(rng, geometry)
    b = b if bias else None
    expected, naive_cache = conv_forward_naive(x, w, np.zeros(3) if b is None else b,
                                               conv_param)
    dout = rng.standard_normal(expected.shape)
    dx, dw, db = conv_backward_naive(dout, naive_cache)
    monkeypatch.setattr(fl, "_CHUNK_BYTES", 400)  # a few samples a chunk
    cast = lambda a: a.astype(dtype)
    assert fl._is_pointwise(w, conv_param["stride"], conv_param["pad"]) == (geometry[-2:]
                                                                             == (1, 0))
    out, cache = fl.conv_forward_fast(cast(x), cast(w), None if b is None else cast(b),
                                      conv_param)
    grads = fl.conv_backward_fast(cast(dout), cache, need_dx=need_dx)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    assert out.dtype == dtype and relative_to(expected, out) < tol
    assert (grads[0] is None) != need_dx and (grads[2] is None) != bias
    for grad, want in zip(grads, (dx, dw, db), strict=True):
        if grad is not None:
            assert grad.dtype == dtype and relative_to(want, grad) < tol


@pytest.mark.parametrize("geometry", [
    (9, 3, 12, 12, 5, 3, 3, 1, 1),  # K = 27 <= P = 144: a GEMM per sample by default
    (9, 12, 8, 8, 7, 3, 3, 2, 1),  # K = 108 > P = 16: one GEMM per chunk by default
    (4, 6, 5, 5, 3, 1, 1, 2, 0),  # 1x1 strided, P = 9 > K = 6
])
@pytest.mark.parametrize("per_sample", [True, False], ids=["per sample", "per chunk"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("need_dx", [True, False])
def test_im2col_gemms_per_sample_and_per_chunk_match_naive(rng, monkeypatch, threads,
                                                           geometry, per_sample, dtype,
                                                           need_dx):
    x, w, b, conv_param = conv_inputs(rng, geometry)
    monkeypatch.setattr(fl, "_CHUNK_BYTES", 3000)  # a few samples a chunk, several chunks
    monkeypatch.setattr(fl, "_per_sample_gemms", lambda K, P: per_sample)
    _check_against_naive(x, w, b, conv_param, dtype, need_dx)


def test_im2col_runs_a_gemm_per_sample_while_positions_outnumber_weights():
    assert fl._per_sample_gemms(27, 1024) and fl._per_sample_gemms(72, 72)
    assert not fl._per_sample_gemms(576, 16) and not fl._per_sample_gemms(147, 121)


@pytest.mark.parametrize("chunk_bytes", [1, 5000, 1 << 30])
def test_conv_fast_is_independent_of_chunking(rng, monkeypatch, chunk_bytes):
    x, w, b, conv_param = conv_inputs(rng, (7, 3, 6, 5, 4, 3, 3, 1, 1))
    expected, naive_cache = conv_forward_naive(x, w, b, conv_param)
    dout = rng.standard_normal(expected.shape)
    expected_grads = conv_backward_naive(dout, naive_cache)
    monkeypatch.setattr(fl, "_CHUNK_BYTES", chunk_bytes)
    out, cache = fl.conv_forward_fast(x, w, b, conv_param)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)
    for grad, expected_grad in zip(fl.conv_backward_fast(dout, cache), expected_grads,
                                   strict=True):
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------- Winograd convolution


@st.composite
def winograd_geometries(draw):
    """(N, C, H, W, F, 3, 3, 1, pad) that conv_forward_fast computes by Winograd: 3x3,
    stride 1, at least _WINOGRAD_MIN_CHANNELS input channels; odd and even sizes, outputs
    down to 1x1, every padding the filter allows."""
    pad = draw(st.integers(0, 2))
    H = draw(st.integers(max(1, 3 - 2 * pad), 9))
    W = draw(st.integers(max(1, 3 - 2 * pad), 9))
    C = fl._WINOGRAD_MIN_CHANNELS + draw(st.integers(0, 3))
    return draw(st.integers(1, 3)), C, H, W, draw(st.integers(1, 5)), 3, 3, 1, pad


def _check_against_naive(x, w, b, conv_param, dtype, need_dx=True, tol=None):
    expected, naive_cache = conv_forward_naive(x, w, b, conv_param)
    dout = np.random.default_rng(1).standard_normal(expected.shape)
    expected_grads = conv_backward_naive(dout, naive_cache)
    cast = lambda a: None if a is None else a.astype(dtype)
    out, cache = fl.conv_forward_fast(cast(x), cast(w), cast(b), conv_param)
    grads = fl.conv_backward_fast(cast(dout), cache, need_dx=need_dx)
    tol = tol or (1e-5 if dtype == np.float32 else 1e-10)
    assert out.dtype == dtype and relative_to(expected, out) < tol
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        if expected_grad is None or (grad is None and not need_dx):
            assert grad is None
            continue
        assert grad.dtype == dtype and relative_to(expected_grad, grad) < tol


@HYPOTHESIS
@given(geometry=winograd_geometries(), seed=st.integers(0, 2**16))
def test_winograd_conv_matches_naive(geometry, seed):
    x, w, b, conv_param = conv_inputs(np.random.default_rng(seed), geometry)
    assert fl._uses_winograd(w, conv_param["stride"])
    _check_against_naive(x, w, b, conv_param, np.float64)


@pytest.mark.parametrize("geometry", [
    (64, 32, 32, 32, 32, 3, 3, 1, 1),  # the reference net's second layer, a whole batch
    (5, 16, 7, 9, 6, 3, 3, 1, 1),      # odd sizes: the last row and column of tiles half out
    (3, 24, 4, 4, 8, 3, 3, 1, 0),      # no padding
    (2, 16, 2, 3, 4, 3, 3, 1, 2),      # more padding than input
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias, need_dx", [(True, True), (False, True), (True, False)])
def test_winograd_conv_matches_naive_on_given_shapes(rng, geometry, dtype, bias, need_dx):
    x, w, b, conv_param = conv_inputs(rng, geometry)
    assert fl._uses_winograd(w, 1)
    _check_against_naive(x, w, b if bias else None, conv_param, dtype, need_dx)


def test_sample_chunks_split_a_shared_budget_or_give_each_chunk_its_own(threads):
    # 64 samples of 100 kB: a 1 MB budget is 10 samples a chunk, or 10 // threads when the
    # chunks in flight share it; never fewer chunks than threads.
    shared = fl._sample_chunks(64, 100_000, 1_000_000)
    own = fl._sample_chunks(64, 100_000, 1_000_000, per_chunk_budget=True)
    for chunks, per_chunk in ((shared, 10 // threads), (own, 10)):
        counts = [count for _, count in chunks]
        assert [n0 for n0, _ in chunks] == list(np.cumsum([0] + counts[:-1]))
        assert sum(counts) == 64
        assert max(counts) <= per_chunk and max(counts) - min(counts) <= 1
        # ... as few chunks as the budget allows, rounded up to a multiple of the threads
        assert len(chunks) == math.ceil(math.ceil(64 / per_chunk) / threads) * threads
    assert len(fl._sample_chunks(3, 100_000, 1 << 30, per_chunk_budget=True)) == min(3, threads)
    # fewer samples than a multiple of the threads: one a chunk at most, none empty
    assert fl._sample_chunks(3, 100_000, 100_000 * threads) == [(0, 1), (1, 1), (2, 1)]


@pytest.mark.parametrize("chunk_bytes", [1, 50_000, 1 << 30])
@pytest.mark.parametrize("shares_bytes", [1, 16 * 4 * 16 * 8 * 3, 1 << 30],
                         ids=["a round per worker", "rounds of 3 shares", "one round"])
def test_winograd_conv_is_independent_of_chunking(rng, monkeypatch, threads, chunk_bytes,
                                                  shares_bytes):
    monkeypatch.setattr(fl, "_WINOGRAD_CHUNK_BYTES", chunk_bytes)
    monkeypatch.setattr(fl, "_WINOGRAD_SHARES_BYTES", shares_bytes)
    x, w, b, conv_param = conv_inputs(rng, (7, 16, 6, 5, 4, 3, 3, 1, 1))
    _check_against_naive(x, w, b, conv_param, np.float64)


def test_winograd_conv_gradients_numerically(rng):
    x, w, b, conv_param = conv_inputs(rng, (2, 16, 5, 4, 3, 3, 3, 1, 1))
    assert fl._uses_winograd(w, 1)
    # The convolution is linear in each input, so a centred difference of any step has no
    # truncation error, only round-off, which a step of 1 makes 1e5 times smaller than the
    # default 1e-5 does (that one's reached 1e-6 relative to dx's smallest entries, over
    # 16-channel sums, depending on the BLAS kernel). A wrong transform is off by O(1).
    check_layer_gradients(lambda x_, w_, b_: fl.conv_forward_fast(x_, w_, b_, conv_param),
                          fl.conv_backward_fast, (x, w, b), rng, tol=1e-9, h=1.0)


# The filter transform's matrix, written out independently of the kernels.
WINOGRAD_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
WINOGRAD_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("F, C", [(5, 7), (4, 16), (3, 33)])
def test_winograd_filter_transform_is_G_g_G_transposed(rng, threads, dtype, F, C):
    w = rng.standard_normal((F, C, 3, 3)).astype(dtype)
    want = np.einsum("ia,fcab,jb->ijfc", WINOGRAD_G, w, WINOGRAD_G).reshape(16, F, C)
    U = fl._winograd_filters(w)
    assert U.dtype == dtype and U.shape == want.shape
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(U, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("F, C", [(5, 7), (4, 16), (3, 33)])
def test_winograd_filter_grad_transform_is_G_transposed_dU_G(rng, threads, dtype, F, C):
    dU = rng.standard_normal((16, F, C))
    dw = np.empty((F, C, 3, 3), dtype=dtype)
    fl._kernels.winograd_filter_grad_transform(dU.astype(dtype), dw)
    want = np.einsum("ia,ijfc,jb->fcab", WINOGRAD_G, dU.reshape(4, 4, F, C), WINOGRAD_G)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(dw, want, rtol=tol, atol=tol)
    # ... which is the adjoint of the forward transform: <U(w), dU> = <w, dw>.
    w = rng.standard_normal((F, C, 3, 3))
    np.testing.assert_allclose(np.vdot(fl._winograd_filters(w), dU.reshape(16, F, C)),
                               np.vdot(w, want), rtol=1e-12)


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("geometry", [
    (3, 16, 8, 8, 5, 3, 3, 1, 1),    # whole tiles of either size
    (2, 17, 7, 9, 4, 3, 3, 1, 1),    # the last row and column of 4x4 tiles mostly out
    (2, 16, 3, 2, 3, 3, 3, 1, 2),    # outputs 5 x 4 from more padding than input
    (2, 16, 3, 3, 3, 3, 3, 1, 0),    # a 1 x 1 output: one tile, almost all outside
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd_conv_matches_naive_with_either_tile_size(rng, monkeypatch, threads, tile,
                                                           geometry, dtype):
    # _WINOGRAD4_MIN_SIZE 1 puts every output on F(4x4, 3x3), one past any size on F(2x2).
    monkeypatch.setattr(fl, "_WINOGRAD4_MIN_SIZE", 1 if tile == 4 else 1 << 30)
    x, w, b, conv_param = conv_inputs(rng, geometry)
    Ho, Wo = conv_forward_naive(x, w, b, conv_param)[0].shape[2:]
    assert fl._winograd_tile_size(Ho, Wo) == tile
    _check_against_naive(x, w, b, conv_param, dtype)


def test_winograd_picks_4x4_tiles_for_outputs_of_at_least_4x4():
    assert fl._winograd_tile_size(4, 4) == fl._winograd_tile_size(32, 9) == 4
    assert fl._winograd_tile_size(3, 32) == fl._winograd_tile_size(2, 2) == 2


def test_winograd_4x4_conv_gradients_numerically(rng):
    x, w, b, conv_param = conv_inputs(rng, (2, 16, 6, 5, 3, 3, 3, 1, 1))
    assert fl._winograd_tile_size(6, 5) == 4
    check_layer_gradients(lambda x_, w_, b_: fl.conv_forward_fast(x_, w_, b_, conv_param),
                          fl.conv_backward_fast, (x, w, b), rng, tol=1e-9, h=1.0)


# F(4x4, 3x3)'s matrices (Lavin & Gray, 2016), written out independently of the kernels.
WINOGRAD4_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                        [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
WINOGRAD4_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_winograd_4x4_filter_transforms_are_G_g_G_transposed_and_its_adjoint(rng, threads,
                                                                             dtype):
    F, C = 5, 17
    w = rng.standard_normal((F, C, 3, 3)).astype(dtype)
    U = fl._winograd_filters(w, 4)
    want = np.einsum("ia,fcab,jb->ijfc", WINOGRAD4_G, w, WINOGRAD4_G).reshape(36, F, C)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    assert U.dtype == dtype
    np.testing.assert_allclose(U, want, rtol=tol, atol=tol)
    dU = rng.standard_normal((36, F, C)).astype(dtype)
    dw = fl._winograd_filter_grad(dU, 4)
    want = np.einsum("ia,ijfc,jb->fcab", WINOGRAD4_G, dU.reshape(6, 6, F, C), WINOGRAD4_G)
    assert dw.dtype == dtype
    np.testing.assert_allclose(dw, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("tile, BT", [(2, WINOGRAD_BT), (4, WINOGRAD4_BT)], ids=["2x2", "4x4"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C, H, W, pad", [(5, 7, 6, 1), (16, 4, 5, 0), (37, 6, 9, 2),
                                          (3, 9, 10, 2)])
def test_winograd_input_transform_is_BT_d_B_in_either_layout(rng, tile, BT, dtype, C, H, W,
                                                             pad):
    # The backward writes V (planes, C, tiles) as the transpose of a (planes, tiles, C)
    # array (F(2x2) by blocks of channels, a last block that is partial with C = 5 or 37).
    x = rng.standard_normal((3, C, H, W)).astype(dtype)
    th, tw = fl._winograd_tiles(H + 2 * pad - 2, W + 2 * pad - 2, tile)
    planes = (tile + 2) ** 2
    V = np.empty((planes, C, 2 * th * tw), dtype=dtype)
    fl._kernels.winograd_input_transform(x, V, 1, pad, th, tw)
    V_t = np.full((planes, 2 * th * tw, C), np.nan, dtype=dtype)
    fl._kernels.winograd_input_transform(x, V_t.transpose(0, 2, 1), 1, pad, th, tw)
    np.testing.assert_array_equal(V_t.transpose(0, 2, 1), V)
    # ... and V is B^T d B of each tile (the forward's layout, checked against NumPy).
    padded = np.pad(x[1:], ((0, 0), (0, 0), (pad, tile * th + 2 - H - pad),
                            (pad, tile * tw + 2 - W - pad)))
    tiles = np.lib.stride_tricks.sliding_window_view(padded, (tile + 2, tile + 2),
                                                     axis=(2, 3))[:, :, ::tile, ::tile]
    want = np.einsum("ia,nctsab,jb->ijcnts", BT, tiles, BT)
    atol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(V, want.reshape(planes, C, -1), rtol=1e-12 if tile == 2 else atol,
                               atol=atol)


def test_convolutions_below_the_channel_threshold_stay_on_im2col(rng):
    w = rng.standard_normal((4, fl._WINOGRAD_MIN_CHANNELS - 1, 3, 3))
    assert not fl._uses_winograd(w, 1)
    assert not fl._uses_winograd(rng.standard_normal((4, 32, 3, 3)), 2)
    assert not fl._uses_winograd(rng.standard_normal((4, 32, 5, 5)), 1)


@pytest.mark.parametrize("forward, backward", CONV_VARIANTS)
def test_conv_gradients_numerically(rng, forward, backward):
    x, w, b, conv_param = conv_inputs(rng, (2, 3, 7, 6, 3, 3, 2, 2, 1))
    out, cache = forward(x, w, b, conv_param)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = backward(dout, cache)
    conv = lambda x_, w_, b_: forward(x_, w_, b_, conv_param)[0]
    assert rel_error(dx, eval_numerical_gradient_array(lambda v: conv(v, w, b), x, dout)) < 1e-7
    assert rel_error(dw, eval_numerical_gradient_array(lambda v: conv(x, v, b), w, dout)) < 1e-7
    assert rel_error(db, eval_numerical_gradient_array(lambda v: conv(x, w, v), b, dout)) < 1e-7


@pytest.mark.parametrize("forward, backward", CONV_VARIANTS)
def test_conv_without_bias(rng, forward, backward):
    x, w, b, conv_param = conv_inputs(rng, (2, 3, 6, 6, 4, 3, 3, 1, 1))
    out, cache = forward(x, w, None, conv_param)
    expected, _ = conv_forward_naive(x, w, np.zeros_like(b), conv_param)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)
    dx, dw, db = backward(np.ones_like(out), cache)
    assert db is None and dx.shape == x.shape and dw.shape == w.shape


def test_empty_batch(rng):
    x, w, b, conv_param = conv_inputs(rng, (0, 3, 6, 6, 4, 3, 3, 1, 1))
    out, cache = fl.conv_forward_fast(x, w, b, conv_param)
    assert out.shape == (0, 4, 6, 6)
    dx, dw, db = fl.conv_backward_fast(out, cache)
    assert dx.shape == x.shape and not dw.any() and not db.any()
    out, cache = fl.max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    assert fl.max_pool_backward_fast(out, cache).shape == x.shape


def test_conv_fast_backward_can_run_twice_on_one_cache(rng):
    x, w, b, conv_param = conv_inputs(rng, (3, 2, 5, 5, 2, 3, 3, 1, 1))
    out, cache = fl.conv_forward_fast(x, w, b, conv_param)
    dout = rng.standard_normal(out.shape)
    first = fl.conv_backward_fast(dout, cache)
    second = fl.conv_backward_fast(dout, cache)
    for a, b_ in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b_)


def test_conv_fast_accepts_non_contiguous_inputs(rng):
    x, w, b, conv_param = conv_inputs(rng, (2, 3, 8, 8, 4, 3, 3, 1, 1))
    x_view = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    w_view = np.repeat(w, 2, axis=0)[::2]
    b_view = np.repeat(b, 2)[::2]
    assert not (x_view.flags.c_contiguous or w_view.flags.c_contiguous)
    expected, naive_cache = conv_forward_naive(x, w, b, conv_param)
    out, cache = fl.conv_forward_fast(x_view, w_view, b_view, conv_param)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)
    dout = np.asfortranarray(rng.standard_normal(out.shape))
    for grad, expected_grad in zip(fl.conv_backward_fast(dout, cache),
                                   conv_backward_naive(dout, naive_cache), strict=True):
        np.testing.assert_allclose(grad, expected_grad, rtol=1e-10, atol=1e-10)


def test_conv_fast_is_thread_safe(rng):
    inputs = [conv_inputs(rng, (4, 3, 12, 12, 5, 3, 3, 1, 1)) for _ in range(4)]
    expected = [conv_forward_naive(*args)[0] for args in inputs]
    results = [None] * len(inputs)

    def work(k):
        for _ in range(5):
            results[k] = fl.conv_forward_fast(*inputs[k])[0]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for out, ref in zip(results, expected, strict=True):
        np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)


def test_parallel_kernels_match_serial_ones(rng):
    x, w, b, conv_param = conv_inputs(rng, (5, 3, 9, 8, 4, 3, 2, 2, 1))
    pool_param = {"pool_height": 3, "pool_width": 2, "stride": 2}

    xw, ww, bw, _ = conv_inputs(rng, (3, 16, 7, 6, 5, 3, 3, 1, 1))  # through Winograd

    def run_all():
        out, cache = fl.conv_forward_fast(x, w, b, conv_param)
        results = [out, *fl.conv_backward_fast(out, cache)]
        out, cache = fl.conv_forward_fast(xw, ww, bw, {"stride": 1, "pad": 1})
        results += [out, *fl.conv_backward_fast(out, cache)]
        for forward, backward in [(fl.max_pool_forward_fast, fl.max_pool_backward_fast),
                                  (fl.avg_pool_forward_fast, fl.avg_pool_backward_fast)]:
            out, cache = forward(x, pool_param)
            results += [out, backward(out, cache)]
        out, cache = fl.global_avg_pool_forward_fast(x)
        cols = fl.im2col_cython(x, 3, 2, 1, 2)
        return results + [out, fl.global_avg_pool_backward_fast(out, cache), cols,
                          fl.col2im_cython(cols, 5, 3, 9, 8, 3, 2, 1, 2)]

    threads = fl._kernels.get_num_threads()
    try:
        fl._kernels.set_num_threads(1)
        serial = run_all()
        fl._kernels.set_num_threads(2)
        parallel = run_all()
    finally:
        fl._kernels.set_num_threads(threads)
    for a, b_ in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b_)


# ------------------------------------------------- convolution fused with max pooling


@pytest.mark.parametrize("geometry, pool", [
    ((5, 3, 9, 8, 4, 5, 5, 1, 2), (2, 2, 2)),      # im2col
    ((4, 16, 10, 7, 6, 3, 3, 1, 1), (2, 2, 2)),    # Winograd, an odd width left over
    ((3, 2, 11, 11, 3, 3, 3, 2, 1), (3, 3, 2)),    # strided conv, overlapping windows
    ((0, 3, 6, 6, 2, 3, 3, 1, 1), (2, 2, 2)),      # empty batch
    ((3, 5, 6, 7, 4, 1, 1, 1, 0), (2, 2, 2)),      # 1x1: a GEMM per sample
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_conv_max_pool_fused_equals_the_separate_layers(rng, threads, geometry, pool, dtype,
                                                       bias, relu):
    x, w, b, conv_param = conv_inputs(rng, geometry, dtype)
    b = b if bias else None
    ph, pw, stride = pool
    pool_param = {"pool_height": ph, "pool_width": pw, "stride": stride}
    pooled, cache = fl.conv_max_pool_forward_fast(x, w, b, conv_param, pool_param, relu=relu)
    conv_cache, pool_cache, relu_cache = cache
    out, want_conv_cache = fl.conv_forward_fast(x, w, b, conv_param)
    want, want_pool_cache = fl.max_pool_forward_fast(out, pool_param)
    if relu:
        want, want_relu_cache = relu_forward(want)
        np.testing.assert_array_equal(relu_cache, want)
    else:
        assert relu_cache is None
    np.testing.assert_array_equal(pooled, want)  # the same kernels on the same chunks
    assert pooled.dtype == dtype
    np.testing.assert_array_equal(pool_cache[2], want_pool_cache[2])
    assert pool_cache[:2] == want_pool_cache[:2]

    def separate_backward(dpooled):
        if relu:
            dpooled = relu_backward(dpooled, want_relu_cache)
        return fl.conv_backward_fast(fl.max_pool_backward_fast(dpooled, pool_cache),
                                     conv_cache)

    dpooled = rng.standard_normal(pooled.shape).astype(dtype)
    fused = fl.conv_max_pool_backward_fast(dpooled, cache)
    separate = separate_backward(dpooled)
    for got, want_ in zip(fused, separate, strict=True):
        if want_ is None:
            assert got is None
        else:
            np.testing.assert_array_equal(got, want_)
    dx, dw, _ = fl.conv_max_pool_backward_fast(dpooled, cache, need_dx=False)
    assert dx is None
    np.testing.assert_array_equal(dw, separate[1])
    if relu and (pooled == 0).any():
        # A NaN gradient on a window the relu closes comes through as NaN, as
        # relu_backward's product (NaN * 0) makes it, not dropped by the mask.
        poisoned = dpooled.copy()
        poisoned[tuple(np.argwhere(pooled == 0)[0])] = np.nan
        got_dw = fl.conv_max_pool_backward_fast(poisoned, cache)[1]
        assert np.isnan(got_dw).any()
        np.testing.assert_array_equal(got_dw, separate_backward(poisoned)[1])
    naive_pool_cache = max_pool_forward_naive(conv_forward_naive(x, w, b, conv_param)[0],
                                              pool_param)[1]
    naive_dpooled = dpooled * (want > 0) if relu else dpooled
    for got, ref in zip(fused,
                        conv_backward_naive(max_pool_backward_naive(naive_dpooled,
                                                                    naive_pool_cache),
                                            conv_forward_naive(x, w, b, conv_param)[1]),
                        strict=True):
        if ref is None:
            assert got is None
        else:
            tol = 1e-4 if dtype == np.float32 else 1e-9
            np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * np.abs(ref).max(initial=1))


@pytest.mark.parametrize("pool_param, match", [
    ({"pool_height": 5, "pool_width": 2, "stride": 2}, "does not fit"),
    ({"pool_height": 2, "pool_width": 2, "stride": 0}, "stride'] must be an integer >= 1"),
])
def test_conv_max_pool_fused_rejects_a_pool_that_does_not_fit(rng, pool_param, match):
    x, w, b, conv_param = conv_inputs(rng, (2, 3, 4, 4, 2, 3, 3, 1, 1))
    with pytest.raises(ValueError, match=match):
        fl.conv_max_pool_forward_fast(x, w, b, conv_param, pool_param)


def test_conv_max_pool_fused_backward_rejects_a_wrong_gradient_shape(rng):
    x, w, b, conv_param = conv_inputs(rng, (2, 3, 4, 4, 2, 3, 3, 1, 1))
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    _, cache = fl.conv_max_pool_forward_fast(x, w, b, conv_param, pool_param)
    with pytest.raises(ValueError, match=r"dout must have shape \(2, 2, 2, 2\)"):
        fl.conv_max_pool_backward_fast(np.ones((2, 2, 3, 3)), cache)


# ------------------------------------------------------------------------ max pooling


@HYPOTHESIS
@given(geometry=pool_geometries(), seed=st.integers(0, 2**16))
def test_max_pool_variants_match_naive(geometry, seed):
    rng = np.random.default_rng(seed)
    N, C, H, W, ph, pw, stride = geometry
    x = distinct_values(rng, (N, C, H, W))
    pool_param = {"pool_height": ph, "pool_width": pw, "stride": stride}
    expected, naive_cache = max_pool_forward_naive(x, pool_param)
    dout = rng.standard_normal(expected.shape)
    expected_dx = max_pool_backward_naive(dout, naive_cache)
    for forward, backward in MAX_POOL_VARIANTS:
        out, cache = forward(x, pool_param)
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_allclose(backward(dout, cache), expected_dx, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, size", [((2, 3, 8, 6), 2), ((1, 2, 9, 9), 3), ((3, 1, 4, 4), 1)])
def test_max_pool_reshape_matches_naive(rng, shape, size):
    x = distinct_values(rng, shape)
    pool_param = {"pool_height": size, "pool_width": size, "stride": size}
    expected, naive_cache = max_pool_forward_naive(x, pool_param)
    out, cache = fl.max_pool_forward_reshape(x, pool_param)
    np.testing.assert_array_equal(out, expected)
    dout = rng.standard_normal(out.shape)
    np.testing.assert_array_equal(
        fl.max_pool_backward_reshape(dout, cache), max_pool_backward_naive(dout, naive_cache)
    )


@pytest.mark.parametrize(
    "pool_param",
    [
        {"pool_height": 2, "pool_width": 2, "stride": 1},
        {"pool_height": 2, "pool_width": 3, "stride": 2},
        {"pool_height": 3, "pool_width": 3, "stride": 3},  # 8 is not a multiple of 3
    ],
)
def test_max_pool_reshape_rejects_windows_that_do_not_tile(rng, pool_param):
    with pytest.raises(ValueError, match="tile"):
        fl.max_pool_forward_reshape(rng.standard_normal((1, 1, 8, 8)), pool_param)


def test_max_pool_ties_route_to_the_first_maximum():
    x = np.zeros((1, 1, 2, 2))
    out, cache = fl.max_pool_forward_fast(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    dx = fl.max_pool_backward_fast(np.ones_like(out), cache)
    np.testing.assert_array_equal(dx, [[[[1.0, 0.0], [0.0, 0.0]]]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pool_2x2_equals_naive_on_every_window_of_ties_and_specials(dtype):
    """All 5^4 windows over {0, 1, -inf, inf, NaN}: ties, a NaN anywhere, inf - inf sums.
    25 windows to a row, so most go through the float32 kernel's vectorised loop, and
    each plane holds NaNs, so its in-order rescan runs too."""
    values = np.array([0.0, 1.0, -np.inf, np.inf, np.nan])
    windows = values[np.indices((5,) * 4).reshape(4, -1).T]       # (625, 4): a, b, c, d
    x = windows.reshape(5, 5, 25, 2, 2).transpose(0, 1, 3, 2, 4)  # (5, 5, 2 rows, 25, 2)
    x = np.ascontiguousarray(x.reshape(5, 5, 2, 50), dtype=dtype)
    finite_planes = np.where(np.isfinite(x), x, 0.5)              # no NaN: no rescan
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    for planes in (x, finite_planes):
        naive, naive_cache = max_pool_forward_naive(planes, pool_param)
        fast, fast_cache = fl.max_pool_forward_fast(planes, pool_param)
        np.testing.assert_array_equal(fast, naive)
        dout = np.arange(1, naive.size + 1, dtype=dtype).reshape(naive.shape)
        np.testing.assert_array_equal(fl.max_pool_backward_fast(dout, fast_cache),
                                      max_pool_backward_naive(dout, naive_cache))


@pytest.mark.parametrize("forward, backward", [
    *MAX_POOL_VARIANTS, (fl.max_pool_forward_reshape, fl.max_pool_backward_reshape),
])
def test_max_pool_gradients_numerically(rng, forward, backward):
    x = distinct_values(rng, (2, 3, 8, 6))
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    out, cache = forward(x, pool_param)
    dout = rng.standard_normal(out.shape)
    numerical = eval_numerical_gradient_array(lambda v: forward(v, pool_param)[0], x, dout)
    assert rel_error(backward(dout, cache), numerical) < 1e-7


# ------------------------------------------------------------------------ average pooling


@HYPOTHESIS
@given(geometry=pool_geometries(), seed=st.integers(0, 2**16))
def test_avg_pool_matches_naive(geometry, seed):
    rng = np.random.default_rng(seed)
    N, C, H, W, ph, pw, stride = geometry
    x = rng.standard_normal((N, C, H, W))
    pool_param = {"pool_height": ph, "pool_width": pw, "stride": stride}
    expected, naive_cache = avg_pool_forward_naive(x, pool_param)
    out, cache = fl.avg_pool_forward_fast(x, pool_param)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    np.testing.assert_allclose(fl.avg_pool_backward_fast(dout, cache),
                               avg_pool_backward_naive(dout, naive_cache), rtol=1e-12, atol=1e-12)


def test_pooling_gradients_numerically(rng):
    x = rng.standard_normal((2, 3, 7, 5))
    pool_param = {"pool_height": 3, "pool_width": 2, "stride": 2}
    out, cache = fl.avg_pool_forward_fast(x, pool_param)
    dout = rng.standard_normal(out.shape)
    numerical = eval_numerical_gradient_array(
        lambda v: fl.avg_pool_forward_fast(v, pool_param)[0], x, dout
    )
    assert rel_error(fl.avg_pool_backward_fast(dout, cache), numerical) < 1e-7

    out, cache = fl.global_avg_pool_forward_fast(x)
    dout = rng.standard_normal(out.shape)
    numerical = eval_numerical_gradient_array(
        lambda v: fl.global_avg_pool_forward_fast(v)[0], x, dout
    )
    assert rel_error(fl.global_avg_pool_backward_fast(dout, cache), numerical) < 1e-7


def test_global_avg_pool_matches_mean(rng):
    x = rng.standard_normal((3, 4, 5, 6))
    out, cache = fl.global_avg_pool_forward_fast(x)
    np.testing.assert_allclose(out, x.mean(axis=(2, 3)), rtol=1e-12)
    dout = rng.standard_normal((3, 4))
    dx = fl.global_avg_pool_backward_fast(dout, cache)
    np.testing.assert_allclose(dx, np.broadcast_to(dout[:, :, None, None] / 30, x.shape))


# ------------------------------------------------------------------ dtypes and errors

POOL_PARAM = {"pool_height": 2, "pool_width": 2, "stride": 2}
POOL_LAYERS = [
    *MAX_POOL_VARIANTS,
    (fl.max_pool_forward_reshape, fl.max_pool_backward_reshape),
    (fl.avg_pool_forward_fast, fl.avg_pool_backward_fast),
]


@pytest.mark.parametrize("forward, backward", CONV_VARIANTS)
def test_conv_keeps_float32(rng, forward, backward):
    x, w, b, conv_param = conv_inputs(rng, (2, 3, 6, 6, 4, 3, 3, 1, 1), np.float32)
    out, cache = forward(x, w, b, conv_param)
    assert out.dtype == np.float32
    assert all(g.dtype == np.float32 for g in backward(np.ones_like(out), cache))


def test_float64_upstream_gradient_does_not_upcast_a_float32_layer(rng):
    x, w, b, conv_param = conv_inputs(rng, (2, 3, 6, 6, 4, 3, 3, 1, 1), np.float32)
    out, cache = fl.conv_forward_fast(x, w, b, conv_param)
    grads = fl.conv_backward_fast(np.ones(out.shape), cache)
    assert all(g.dtype == np.float32 for g in grads)


@pytest.mark.parametrize("forward, backward", POOL_LAYERS)
def test_pooling_keeps_float32(rng, forward, backward):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    out, cache = forward(x, POOL_PARAM)
    assert out.dtype == np.float32
    assert backward(np.ones_like(out), cache).dtype == np.float32
    out, cache = fl.global_avg_pool_forward_fast(x)
    assert out.dtype == np.float32
    assert fl.global_avg_pool_backward_fast(np.ones_like(out), cache).dtype == np.float32


@pytest.mark.parametrize("forward, backward", CONV_VARIANTS)
def test_conv_promotes_mixed_and_integer_dtypes_as_numpy_does(rng, forward, backward):
    x, w, b, conv_param = conv_inputs(rng, (2, 3, 6, 6, 4, 3, 3, 1, 1))
    reference, _ = conv_forward_naive(x, w, b, conv_param)
    # float32 with float64 computes in float64, like NumPy's own arithmetic.
    for args in ((x.astype(np.float32), w, b), (x, w, b.astype(np.float32))):
        out, cache = forward(*args, conv_param)
        assert out.dtype == np.float64
        np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)
        assert all(g.dtype == np.float64 for g in backward(np.ones_like(out), cache))
    # Integer test arrays (the course's notebooks build them) compute in float64.
    xi, wi, bi = (np.rint(a * 3).astype(np.int64) for a in (x, w, b))
    out, _ = forward(xi, wi, bi, conv_param)
    expected, _ = conv_forward_naive(*(a.astype(np.float64) for a in (xi, wi, bi)),
                                     conv_param)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    with pytest.raises(TypeError, match="real numbers"):
        forward(x.astype(np.complex128), w, b, conv_param)
    with pytest.raises(TypeError, match="NumPy array"):
        forward(x, w.tolist(), b, conv_param)


@pytest.mark.parametrize("forward, backward", CONV_VARIANTS)
@pytest.mark.parametrize(
    "x_shape, w_shape, b_shape, conv_param, message",
    [
        ((2, 3, 6, 6), (4, 2, 3, 3), (4,), {"stride": 1, "pad": 1}, "channels"),
        ((2, 3, 6, 6), (4, 3, 3, 3), (5,), {"stride": 1, "pad": 1}, "b must have shape"),
        ((2, 3, 4, 4), (4, 3, 7, 7), (4,), {"stride": 1, "pad": 1}, "does not fit"),
        ((3, 6, 6), (4, 3, 3, 3), (4,), {"stride": 1, "pad": 1}, "4-dimensional"),
        ((2, 3, 6, 6), (4, 3, 3, 3), (4,), {"stride": 0, "pad": 1}, "stride"),
        ((2, 3, 6, 6), (4, 3, 3, 3), (4,), {"stride": 1, "pad": -1}, "pad"),
    ],
)
def test_conv_rejects_bad_geometry(rng, forward, backward, x_shape, w_shape, b_shape,
                                   conv_param, message):
    x, w, b = (rng.standard_normal(s) for s in (x_shape, w_shape, b_shape))
    with pytest.raises(ValueError, match=message):
        forward(x, w, b, conv_param)


@pytest.mark.parametrize("forward, backward", POOL_LAYERS)
def test_pooling_rejects_bad_input(rng, forward, backward):
    with pytest.raises(TypeError, match="real numbers"):
        forward(np.ones((1, 1, 4, 4), dtype=object), POOL_PARAM)
    ints = np.arange(16, dtype=np.int32).reshape(1, 1, 4, 4)
    out, _ = forward(ints, POOL_PARAM)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, forward(ints.astype(np.float64), POOL_PARAM)[0])
    with pytest.raises(ValueError, match="does not fit"):
        forward(rng.standard_normal((1, 1, 1, 4)), POOL_PARAM)
    with pytest.raises(ValueError, match="4-dimensional"):
        forward(rng.standard_normal((4, 4)), POOL_PARAM)
    out, cache = forward(rng.standard_normal((1, 1, 4, 4)), POOL_PARAM)
    with pytest.raises(ValueError, match="dout must have shape"):
        backward(np.ones((1, 1, 3, 2)), cache)


def test_conv_backward_rejects_wrong_dout_shape(rng):
    x, w, b, conv_param = conv_inputs(rng, (2, 3, 6, 6, 4, 3, 3, 1, 1))
    _, cache = fl.conv_forward_fast(x, w, b, conv_param)
    with pytest.raises(ValueError, match="dout must have shape"):
        fl.conv_backward_fast(np.ones((2, 4, 5, 6)), cache)


# ------------------------------------------------------------------------- batchnorm (+ relu)


BN_SHAPES = [(4, 3, 5, 7), (1, 2, 1, 1), (3, 5, 2, 9), (64, 8, 4, 4)]


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("relu", [False, True])
def test_fast_spatial_batchnorm_equals_the_readable_layers(dtype, tol, shape, relu, rng):
    from convlab.layers import (
        relu_backward,
        spatial_batchnorm_backward,
        spatial_batchnorm_forward,
    )

    C = shape[1]
    x = (rng.standard_normal(shape) * 3 + 1.5).astype(dtype)
    gamma, beta = rng.standard_normal(C).astype(dtype), rng.standard_normal(C).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    readable_param = {"mode": "train", "momentum": 0.8}
    fast_param = {"mode": "train", "momentum": 0.8}
    expected, cache = spatial_batchnorm_forward(x, gamma, beta, readable_param)
    if relu:
        forward = fl.spatial_batchnorm_relu_forward_fast
        backward = fl.spatial_batchnorm_relu_backward_fast
        upstream = relu_backward(dout, expected)
        expected = np.maximum(expected, 0)
    else:
        forward, backward = fl.spatial_batchnorm_forward_fast, fl.spatial_batchnorm_backward_fast
        upstream = dout
    out, fast_cache = forward(x, gamma, beta, fast_param)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)
    for key in ("running_mean", "running_var"):
        assert fast_param[key].dtype == dtype
        np.testing.assert_allclose(fast_param[key], readable_param[key], rtol=tol, atol=tol)
    for got, want in zip(backward(dout, fast_cache),
                         spatial_batchnorm_backward(upstream, cache), strict=True):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    # Test mode: the running statistics, then the relu.
    fast_param["mode"] = readable_param["mode"] = "test"
    test_out, _ = forward(x, gamma, beta, fast_param)
    reference, _ = spatial_batchnorm_forward(x, gamma, beta, readable_param)
    np.testing.assert_allclose(test_out, np.maximum(reference, 0) if relu else reference,
                               rtol=tol, atol=tol)


def test_fast_spatial_batchnorm_gradients(rng):
    x = rng.standard_normal((3, 4, 5, 5)) * 2 + 1
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    check_layer_gradients(
        lambda x, g, b: fl.spatial_batchnorm_forward_fast(x, g, b, {"mode": "train"}),
        fl.spatial_batchnorm_backward_fast, (x, gamma, beta), rng)


def test_fast_spatial_batchnorm_rejects_bad_input(rng):
    x = rng.standard_normal((2, 3, 4, 4))
    with pytest.raises(ValueError, match="gamma and beta must have shape"):
        fl.spatial_batchnorm_forward_fast(x, np.ones(2), np.zeros(3), {"mode": "train"})
    with pytest.raises(ValueError, match="non-empty batch"):
        fl.spatial_batchnorm_relu_forward_fast(x[:0], np.ones(3), np.zeros(3), {"mode": "train"})
    with pytest.raises(ValueError, match="4-dimensional"):
        fl.spatial_batchnorm_forward_fast(x[0], np.ones(3), np.zeros(3), {"mode": "train"})
    _, cache = fl.spatial_batchnorm_forward_fast(x, np.ones(3), np.zeros(3), {"mode": "test"})
    with pytest.raises(ValueError, match="'train' mode"):
        fl.spatial_batchnorm_backward_fast(np.ones_like(x), cache)
    _, cache = fl.spatial_batchnorm_forward_fast(x, np.ones(3), np.zeros(3), {"mode": "train"})
    with pytest.raises(ValueError, match="dout must have shape"):
        fl.spatial_batchnorm_backward_fast(np.ones((2, 3, 4, 5)), cache)


# ------------------------------------------------- the kernels' own argument checks


def _bad_kernel_calls():
    """Calls whose arrays do not fit together: the kernels index without bounds checks, so
    each must raise before touching memory."""
    k = fl._kernels
    f4 = np.float32
    x = np.zeros((2, 3, 5, 5), f4)
    yield "Ho, Wo", lambda: k.im2col_samples(x, np.zeros((27, 50), f4), 0, 3, 3, 1, 1, 6, 5)
    yield "cols of shape", lambda: k.im2col_samples(x, np.zeros((26, 50), f4), 0, 3, 3, 1, 1,
                                                    5, 5)
    yield "within the batch", lambda: k.im2col_samples(x, np.zeros((27, 50), f4), 1, 3, 3, 1,
                                                       1, 5, 5)
    yield "within the batch", lambda: k.col2im_samples(np.zeros((27, 75), f4), x, 0, 3, 3, 1,
                                                       1, 5, 5)
    yield "U (16, F, C)", lambda: k.winograd_filter_transform(np.zeros((4, 3, 3, 3), f4),
                                                              np.zeros((16, 3, 4), f4))
    yield "dU (16, F, C)", lambda: k.winograd_filter_grad_transform(np.zeros((16, 3, 4), f4),
                                                                   np.zeros((4, 3, 3, 3), f4))
    x16 = np.zeros((2, 16, 6, 6), f4)  # Ho = Wo = 6 at pad 1: 3 x 3 tiles
    yield "tiles", lambda: k.winograd_input_transform(x16, np.zeros((16, 16, 8), f4), 0, 1,
                                                      2, 4)
    yield "16 planes", lambda: k.winograd_input_transform(x16, np.zeros((25, 16, 9), f4), 0, 1,
                                                          3, 3)
    yield "tiles", lambda: k.winograd_output_transform(  # 3 x 3 tiles are F(2x2)'s, not F(4x4)'s
        np.zeros((36, 4, 9), f4), np.zeros(4, f4), np.zeros((2, 4, 6, 6), f4), 0, 3, 3)
    yield "tiles of shape", lambda: k.winograd_input_transform(x16, np.zeros((16, 15, 9), f4),
                                                               0, 1, 3, 3)
    yield "within the batch", lambda: k.winograd_input_transform(
        x16, np.zeros((16, 16, 27), f4), 0, 1, 3, 3)
    yield "bias (F,)", lambda: k.winograd_output_transform(
        np.zeros((16, 4, 9), f4), np.zeros(3, f4), np.zeros((2, 4, 6, 6), f4), 0, 3, 3)
    yield "within the batch", lambda: k.winograd_output_grad_transform(
        np.zeros((2, 4, 6, 6), f4), np.zeros((16, 4, 9), f4), np.zeros((1, 4)), 2, 3, 3)
    yield "tiles", lambda: k.winograd_input_grad_transform(np.zeros((16, 16, 0), f4), x16, 0,
                                                           1, 0, 0)
    # Tiles two apart: the kernels step through a plane's tiles one element at a time.
    # (Ho = Wo = 6 at pad 1 is 2 x 2 tiles of F(4x4); a (36, 16, 8) array's every other
    # tile is 4 of them.)
    spaced = np.zeros((36, 16, 8), f4)[:, :, ::2]
    yield "V's tiles or its channels contiguous", lambda: k.winograd_input_transform(
        x16, spaced, 0, 1, 2, 2)
    yield "M's tiles contiguous", lambda: k.winograd_output_transform(
        spaced, np.zeros(16, f4), np.zeros((2, 16, 6, 6), f4), 0, 2, 2)
    yield "dM's tiles contiguous", lambda: k.winograd_output_grad_transform(
        np.zeros((2, 16, 6, 6), f4), spaced, np.zeros((1, 16)), 0, 2, 2)
    yield "dV's tiles contiguous", lambda: k.winograd_input_grad_transform(spaced, x16, 0, 1,
                                                                           2, 2)
    planes, stats = np.zeros((2, 3, 25), f4), np.zeros(3)
    yield "out (and mask, with relu) of x's shape", lambda: k.batchnorm_train_forward(
        planes, np.ones(3, f4), np.zeros(3, f4), 1e-5, True, planes, np.zeros((2, 3, 24),
                                                                             np.uint8),
        stats, stats, stats)
    yield "gamma, beta and the statistics (C,)", lambda: k.batchnorm_train_forward(
        planes, np.ones(2, f4), np.zeros(3, f4), 1e-5, False, planes,
        np.zeros((1, 1, 1), np.uint8), stats, stats, stats)
    yield "x, dx (and mask, with relu) of dout's shape", lambda: k.batchnorm_train_backward(
        planes, np.zeros((2, 3, 24), f4), np.zeros((1, 1, 1), np.uint8), np.ones(3, f4),
        stats, stats, False, planes, stats, stats)
    yield "w, dw, the state and the out arrays of one length", lambda: k.adam_update(
        *[np.zeros(5, f4)] * 4, np.zeros(4, f4), *[np.zeros(5, f4)] * 2, 1e-3, 0.9, 0.999,
        1e-8, 1)
    yield "t >= 1", lambda: k.adam_update(*[np.zeros(5, f4)] * 7, 1e-3, 0.9, 0.999, 1e-8, 0)


@pytest.mark.parametrize("match, call", list(_bad_kernel_calls()))
def test_kernels_reject_arrays_that_do_not_fit_together(match, call):
    with pytest.raises(ValueError, match=re.escape(match)):
        call()
