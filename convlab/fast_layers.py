"""Fast convolution and pooling layers: compiled kernels (convlab._kernels) driven from
Python.

Every public function has the contract of its naive counterpart in ``convlab.layers``:
x ``(N, C, H, W)``, w ``(F, C, HH, WW)``, b ``(F,)`` or None, out ``(N, F, H', W')`` with
``H' = 1 + (H + 2 pad - HH) // stride``; float32 stays float32, float64 stays float64.

The fast convolution works on chunks of samples (see _CHUNK_BYTES), spread over the chunk
workers (convlab._threads): their columns, in the kernels' sample-major layout, go to
scratch buffers reused across chunks and calls (no page faults from fresh allocations),
and the backward pass recomputes the columns from x instead of keeping them alive in the
cache. The affine layers' GEMMs are split over the same workers.

On GPU arrays (CuPy) the layers of the models -- conv_*_fast, max/avg_pool_*_fast,
global_avg_pool_*_fast and the spatial batchnorm (+relu) -- run convlab.gather_layers and
the readable layers instead, which are written for any array module; the backward pass
follows the device of dout.
"""

import threading

import numpy as np

from convlab._checks import (
    as_float_array,
    check_affine_operands,
    check_conv_operands,
    check_dout,
    check_int,
    check_nonempty_batch,
    check_pool_input,
    conv_output_size,
    norm_operands,
    pool_geometry,
    pool_output_size,
    require_train_cache,
)
from convlab._heap import keep_freed_memory
from convlab._threads import (
    chunk_workers,
    get_num_threads,
    load_kernels,
    map_chunks,
    matmul,
    sum_stack,
)
from convlab.backend import is_host
from convlab.gather_layers import (
    avg_pool_backward_gather,
    avg_pool_forward_gather,
    conv_backward_gather,
    conv_forward_gather,
    max_pool_backward_gather,
    max_pool_forward_gather,
)
from convlab.layers import (
    affine_backward,
    affine_forward,
    batchnorm_running_stats,
    global_avg_pool_backward,
    global_avg_pool_forward,
    relu_backward,
    relu_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
)

_kernels = load_kernels()
keep_freed_memory()

__all__ = [
    "im2col_cython",
    "col2im_cython",
    "affine_forward_fast",
    "affine_backward_fast",
    "conv_forward_fast",
    "conv_backward_fast",
    "conv_max_pool_forward_fast",
    "conv_max_pool_backward_fast",
    "conv_forward_im2col",
    "conv_backward_im2col",
    "conv_forward_strides",
    "conv_backward_strides",
    "max_pool_forward_fast",
    "max_pool_backward_fast",
    "max_pool_forward_reshape",
    "max_pool_backward_reshape",
    "max_pool_forward_im2col",
    "max_pool_backward_im2col",
    "avg_pool_forward_fast",
    "avg_pool_backward_fast",
    "global_avg_pool_forward_fast",
    "global_avg_pool_backward_fast",
    "spatial_batchnorm_forward_fast",
    "spatial_batchnorm_backward_fast",
    "spatial_batchnorm_relu_forward_fast",
    "spatial_batchnorm_relu_backward_fast",
]

# im2col's column chunks are at most about this size (divided among the threads, see
# _sample_chunks). Chunks bound the scratch memory (the columns of a CIFAR batch through a
# 7x7 filter take 38 MB in float32) and keep a chunk's columns in cache from im2col to GEMM
# to col2im: a 7x7 convolution's forward+backward took 41 ms at 4-8 MB against 60 ms at
# 24 MB (batch 64, one core).
_CHUNK_BYTES = 4 << 20

# 3x3 stride-1 convolutions with at least this many input channels go through Winograd
# F(2x2, 3x3): 16 GEMMs (F, C) @ (C, tiles) do the work of im2col's (F, 9 C) @ (9 C, H' W')
# with 2.25x fewer flops, and the transformed input is 4x the input where im2col's columns
# are 9x. With fewer channels the GEMMs' inner dimension is too short to pay (a network's
# first layer, C = 3, stays on im2col).
_WINOGRAD_MIN_CHANNELS = 16
# Outputs at least this size on each side go through F(4x4, 3x3) instead (36 products per
# 16 outputs where F(2x2, 3x3) takes 16 per 4); smaller ones would be mostly padding
# tiles.
_WINOGRAD4_MIN_SIZE = 4
# Winograd works on much smaller chunks than im2col: its transformed input and products of a
# chunk then stay in the L2/L3 caches from transform to GEMM to transform, which measured
# 2x faster at 1-2 MB than at 24 MB (reference net, batch 64, one core). The budget is each
# chunk's, whatever the thread count: a chunk stays on one core, in that core's own L2.
# Since the F(4x4, 3x3) transforms run over all of a chunk's samples at once, the reference
# step (batch 64) measured best at 2-3 MB a chunk: 1 MB took 7% longer on one thread and on
# two, 0.5 MB 17% (native OpenBLAS kernel, 3 alternating rounds).
_WINOGRAD_CHUNK_BYTES = 2 << 20
# At most this much memory holds the Winograd backward's per-chunk shares of the filter
# gradient (more than all shares of the reference net's layers: 7 MiB at 64 -> 128
# channels, 8x8, batch 64 on two threads).
_WINOGRAD_SHARES_BYTES = 16 << 20


# ============================================================================ validation


def _conv_operands(x, w, b, conv_param):
    """Validate a convolution's inputs; return contiguous x, w, b and (stride, pad, H', W')."""
    x, w, b, geometry = check_conv_operands(x, w, b, conv_param)
    b = None if b is None else np.ascontiguousarray(b)
    return np.ascontiguousarray(x), np.ascontiguousarray(w), b, geometry


def _pool_operands(x, pool_param):
    """Validate a pooling input; return contiguous x and (ph, pw, stride, H', W')."""
    x, geometry = check_pool_input(x, pool_param)
    return np.ascontiguousarray(x), geometry


def _kernel_geometry(field_height, field_width, padding, stride):
    """The im2col/col2im kernel arguments as ints; TypeError/ValueError unless valid."""
    return (check_int(field_height, "field_height", 1), check_int(field_width, "field_width", 1),
            check_int(padding, "padding", 0), check_int(stride, "stride", 1))


# ======================================================================= scratch memory


_scratch_space = threading.local()


def _scratch(name, shape, dtype):
    """A reusable C-contiguous array private to the calling thread; contents are undefined.

    Only used for temporaries that never leave a function, so reusing them across calls is
    safe; it saves the page faults of allocating a fresh multi-megabyte buffer every call.
    Each thread keeps its largest buffer per (name, dtype): about _CHUNK_BYTES of columns,
    a pooled convolution's output chunk, the Winograd chunks' V and M.
    """
    buffers = getattr(_scratch_space, "buffers", None)
    if buffers is None:
        buffers = _scratch_space.buffers = {}
    size = 1
    for extent in shape:
        size *= extent
    key = (name, np.dtype(dtype))
    buffer = buffers.get(key)
    if buffer is None or buffer.size < size:
        buffer = buffers[key] = np.empty(size, dtype=dtype)
    return buffer[:size].reshape(shape)


def _sample_chunks(N, bytes_per_sample, chunk_bytes=None, per_chunk_budget=False):
    """(first sample, sample count) pairs of chunks of at most about chunk_bytes (default
    _CHUNK_BYTES) divided by the thread count, or of chunk_bytes each with
    per_chunk_budget: the chunk workers' share. Their sizes differ by one at most, and
    their number is a multiple of the thread count (when there are that many samples), so
    every worker gets the same work: 13 chunks on 2 workers left one idle for a chunk."""
    if N == 0:
        return []
    threads = get_num_threads()
    chunk_bytes = _CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    if not per_chunk_budget:
        # Chunks in flight at once share the caches: each gets its share of the budget.
        chunk_bytes //= threads
    per_chunk = max(1, min(N, chunk_bytes // max(1, bytes_per_sample)))
    n_chunks = -(-N // per_chunk)
    n_chunks = min(N, -(-n_chunks // threads) * threads)  # up to a multiple of the threads
    size, longer = divmod(N, n_chunks)  # the first `longer` chunks take one sample more
    return [(i * size + min(i, longer), size + (i < longer)) for i in range(n_chunks)]


# ======================================================================= public kernels


def im2col_cython(x, field_height, field_width, padding, stride):
    """Image patches as columns, in the cs231n layout.

    x: (N, C, H, W). Returns cols (C fh fw, N H' W') where row (c fh + i) fw + j and
    column (h' W' + w') N + n hold x[n, c, h' stride + i - padding, w' stride + j - padding]
    (zero in the padding), H' = 1 + (H + 2 padding - fh) // stride, likewise W'.
    """
    x = as_float_array(x, "x", ndim=4)
    fh, fw, pad, stride = _kernel_geometry(field_height, field_width, padding, stride)
    N, C, H, W = x.shape
    Ho, Wo = conv_output_size(H, W, fh, fw, stride, pad)
    cols = np.empty((C * fh * fw, N * Ho * Wo), dtype=x.dtype)
    _kernels.im2col_cs231n(np.ascontiguousarray(x), cols, fh, fw, pad, stride, Ho, Wo)
    return cols


def col2im_cython(cols, N, C, H, W, field_height, field_width, padding, stride):
    """Adjoint of im2col_cython: sums each column entry back into its image position.

    cols: (C fh fw, N H' W') in the cs231n layout. Returns dx (N, C, H, W) (padding removed).
    """
    cols = as_float_array(cols, "cols", ndim=2)
    fh, fw, pad, stride = _kernel_geometry(field_height, field_width, padding, stride)
    Ho, Wo = conv_output_size(H, W, fh, fw, stride, pad)
    expected = (C * fh * fw, N * Ho * Wo)
    if cols.shape != expected:
        raise ValueError(f"cols must have shape {expected} for this geometry, got {cols.shape}")
    dx = np.zeros((N, C, H, W), dtype=cols.dtype)
    _kernels.col2im_cs231n(np.ascontiguousarray(cols), dx, fh, fw, pad, stride, Ho, Wo)
    return dx


# ============================================================================= affine


def affine_forward_fast(x, w, b):
    """affine_forward (out = x.reshape(N, D) @ w + b, cache (x, w)) with its GEMM split
    among the chunk workers (see convlab._threads.matmul)."""
    if not is_host(x):
        return affine_forward(x, w, b)
    x, w, b = check_affine_operands(x, w, b)
    out = matmul(x.reshape(x.shape[0], w.shape[0]), w)  # (N, M)
    out += b
    return out, (x, w)


def affine_backward_fast(dout, cache):
    """affine_backward: dout (N, M) -> dx (x's shape), dw (D, M), db (M,)."""
    x, w = cache
    if not is_host(dout):
        return affine_backward(dout, cache)
    dout = check_dout(dout, (x.shape[0], w.shape[1]))
    x_rows = x.reshape(x.shape[0], w.shape[0])  # (N, D)
    dx = matmul(dout, w.T).reshape(x.shape)
    dw = matmul(x_rows.T, dout)
    return dx, dw, dout.sum(axis=0)


# ======================================================================== convolution


def _uses_winograd(w, stride):
    _, C, HH, WW = w.shape
    return HH == WW == 3 and stride == 1 and C >= _WINOGRAD_MIN_CHANNELS


def _winograd_tile_size(Ho, Wo):
    """m of the Winograd F(m x m, 3x3) that convolves to an H' x W' output: 4 once the
    output is at least _WINOGRAD4_MIN_SIZE on each side, else 2."""
    return 4 if min(Ho, Wo) >= _WINOGRAD4_MIN_SIZE else 2


def _winograd_tiles(Ho, Wo, m=2):
    """(th, tw): the m x m output tiles that cover an H' x W' output."""
    return -(-Ho // m), -(-Wo // m)


# Elements between V's (and M's) planes beyond their (rows, cols) matrices: with the
# planes a multiple of 4 KiB apart, as they would be for the usual power-of-two sizes, a
# tile's 16 values compete for the same cache sets, which made the transforms 6x slower.
_WINOGRAD_PLANE_PAD = 16


def _winograd_scratch(name, planes, rows, cols, dtype):
    """A reusable (planes, rows, cols) array whose planes are _WINOGRAD_PLANE_PAD elements
    further apart than contiguity would put them; each plane is C-contiguous."""
    flat = _scratch(name, (planes, rows * cols + _WINOGRAD_PLANE_PAD), dtype)
    return flat[:, :rows * cols].reshape(planes, rows, cols)


def _winograd_chunks(N, C, F, planes, T, itemsize):
    """_sample_chunks for a Winograd convolution of C -> F channels over T tiles a sample:
    a sample's V (planes, C, T) and M (planes, F, T), each chunk within its own budget."""
    return _sample_chunks(N, planes * (C + F) * T * itemsize, _WINOGRAD_CHUNK_BYTES,
                          per_chunk_budget=True)


# F(4x4, 3x3)'s filter transform G (6 x 3) and, as one (36, 9) matrix, G (x) G: U = G g G^T
# of a 3x3 filter g is (G (x) G) vec(g), so the transforms of all F C filters are one GEMM.
_WINOGRAD4_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                         [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
_WINOGRAD4_GG = np.kron(_WINOGRAD4_G, _WINOGRAD4_G)


def _winograd_filters(w, m=2):
    """U ((m + 2)^2, F, C) = G g G^T of every 3x3 filter g = w[f, c]: U[(m + 2) i + j, f, c]."""
    F, C = w.shape[:2]
    if m == 4:
        GG = _WINOGRAD4_GG.astype(w.dtype)
        # by the chunk workers on a single-threaded BLAS, as every GEMM between chunks: a
        # GEMM on OpenBLAS's own threads leaves them spinning against the workers (2x
        # slower convolutions on two threads)
        return matmul(GG, w.reshape(F * C, 9).T).reshape(36, F, C)  # (36, 9) @ (9, F C)
    U = np.empty((16, F, C), dtype=w.dtype)
    # On one thread: 10-70 us of work for the usual layers, less than waking a second
    # (passively waiting) OpenMP thread costs.
    _kernels.winograd_filter_transform(w, U, threads=1)
    return U


def _winograd_filter_grad(dU, m):
    """dw (F, C, 3, 3) = G^T d G for every ((m + 2)^2,) column d = dU[:, f, c]: the adjoint
    of _winograd_filters."""
    _, F, C = dU.shape
    dw = np.empty((F, C, 3, 3), dtype=dU.dtype)
    if m == 4:
        GG = _WINOGRAD4_GG.astype(dU.dtype)
        dw.reshape(F * C, 9)[...] = matmul(GG.T, dU.reshape(36, F * C)).T  # (9, F C)
    else:
        _kernels.winograd_filter_grad_transform(dU, dw)
    return dw


def _conv_forward_winograd(x, w, bias, pad, sink):
    """The 3x3 stride-1 convolution of x by Winograd F(2x2, 3x3) or F(4x4, 3x3), chunk by
    chunk into sink (see _ConvOutput)."""
    N, C = x.shape[:2]
    F, Ho, Wo = sink.shape[1:]
    m = _winograd_tile_size(Ho, Wo)
    th, tw = _winograd_tiles(Ho, Wo, m)
    T = th * tw
    U = _winograd_filters(w, m)
    planes = U.shape[0]

    def chunk(n0, nc, threads):
        V = _winograd_scratch("winograd_V", planes, C, nc * T, x.dtype)
        _kernels.winograd_input_transform(x, V, n0, pad, th, tw, threads)
        M = _winograd_scratch("winograd_M", planes, F, nc * T, x.dtype)
        np.matmul(U, V, out=M)  # a GEMM (F, C) @ (C, nc T) a plane
        out = sink.chunk(n0, nc)
        _kernels.winograd_output_transform(M, bias, out, 0, th, tw, threads)
        sink.done(n0, nc, out, threads)

    map_chunks(chunk, _winograd_chunks(N, C, F, planes, T, x.itemsize))


def _conv_backward_winograd(x, w, grad, pad, dx):
    """(dw, db) of the Winograd convolution for the output gradient grad (a
    _ConvGradient), and dx filled unless it is None. The transformed input V is recomputed
    chunk by chunk instead of kept from the forward."""
    N, C = x.shape[:2]
    F, Ho, Wo = grad.shape[1:]
    m = _winograd_tile_size(Ho, Wo)
    th, tw = _winograd_tiles(Ho, Wo, m)
    T = th * tw
    planes = (m + 2) ** 2
    # dV = U^T dM reads U through a transposed view: OpenBLAS packs it as fast as a
    # contiguous (planes, C, F) copy, which took twice as long to transform as U.
    U_t = _winograd_filters(w, m).transpose(0, 2, 1) if dx is not None else None
    bias_parts = np.empty((N, F))  # float64 sums of dout per (sample, filter)
    chunks = _winograd_chunks(N, C, F, planes, T, x.itemsize)
    # Each chunk's share of dU in a slot of its own, allocated here once (allocating them
    # in the workers, an mmap and munmap each, stalled both cores on every chunk). A share
    # is as big as the layer's transformed filters, so for wide layers the chunks run in
    # rounds of as many slots as fit _WINOGRAD_SHARES_BYTES, each round's shares added
    # into dU before the next: 512 -> 512 channels at 4x4 would otherwise hold 16 shares
    # of 16 MiB.
    workers = chunk_workers(len(chunks))
    share_bytes = planes * F * C * x.itemsize
    slots = max(workers, _WINOGRAD_SHARES_BYTES // share_bytes // workers * workers)
    slots = min(slots, len(chunks))
    dU_shares = np.empty((slots, planes, F, C), dtype=x.dtype)
    slot = {n0: i % slots for i, (n0, _) in enumerate(chunks)}

    def chunk(n0, nc, threads):
        """This chunk's share of dU, its dx and its bias_parts rows, in place."""
        dM = _winograd_scratch("winograd_M", planes, F, nc * T, x.dtype)
        _kernels.winograd_output_grad_transform(grad.chunk(n0, nc, threads), dM,
                                                bias_parts[n0:n0 + nc], 0, th, tw, threads)
        # V^T (planes, nc T, C) written by the transform directly: OpenBLAS runs dM V^T
        # about twice as fast with V^T contiguous as with V's transposed view.
        V_t = _winograd_scratch("winograd_V", planes, nc * T, C, x.dtype)
        _kernels.winograd_input_transform(x, V_t.transpose(0, 2, 1), n0, pad, th, tw, threads)
        np.matmul(dM, V_t, out=dU_shares[slot[n0]])
        if dx is not None:
            # V is spent: its buffer takes dV (planes, C, nc T)
            V = _winograd_scratch("winograd_V", planes, C, nc * T, x.dtype)
            np.matmul(U_t, dM, out=V)
            _kernels.winograd_input_grad_transform(V, dx, n0, pad, th, tw, threads)

    # dU: the shares added share after share in chunk order, a round at a time: the same
    # result whichever thread computed which share. In the shares' own precision, by
    # NumPy's vectorised loops: summed in float64 by the kernel it took 2.4x longer (183
    # against 78 us for 32 shares of 64 x 32 filters), a tenth of the layer's backward on
    # two threads.
    dU = None
    for first in range(0, len(chunks), slots):
        round_chunks = chunks[first:first + slots]
        map_chunks(chunk, round_chunks)
        shares_sum = sum_stack(dU_shares[:len(round_chunks)])  # (planes, F, C)
        dU = shares_sum if dU is None else np.add(dU, shares_sum, out=dU)
    dw = np.zeros((F, C, 3, 3), dtype=x.dtype) if dU is None else _winograd_filter_grad(dU, m)
    return dw, bias_parts.sum(axis=0)


def _is_pointwise(w, stride, pad):
    """True for a 1x1 convolution of stride 1 without padding: a sample's (C, H W) input is
    its own im2col columns, so the convolution is a plain GEMM per sample."""
    return w.shape[2] == w.shape[3] == 1 and stride == 1 and pad == 0


def _columns(x, n0, nc, w_shape, stride, pad, Ho, Wo, threads):
    """The im2col columns of samples n0 .. n0 + nc under a row of ones: a (nc, K + 1, P)
    view (K = C HH WW, P = H' W') of a scratch (K + 1, nc P) array, sample-major."""
    _, C, HH, WW = w_shape
    K, P = C * HH * WW, Ho * Wo
    cols = _scratch("cols", (K + 1, nc * P), x.dtype)
    _kernels.im2col_samples(x, cols[:K], n0, HH, WW, pad, stride, Ho, Wo, threads)
    cols[K] = 1
    return cols.reshape(K + 1, nc, P).transpose(1, 0, 2)


def _per_sample_gemms(K, P):
    """Whether an im2col convolution with K = C HH WW and P = H' W' runs a GEMM per sample
    (F, K + 1) @ (K + 1, P), else one over a chunk's nc P columns, whose (F, nc P) product
    then takes a copy into the (nc, F, P) output (and the backward's gradient one out of
    it). Per sample pays while P >= K: with fewer positions than weights a sample, each GEMM
    reads all the weights for a few columns, and the backward's per-sample dw products
    (nc, K + 1, F) outweigh the GEMMs (one thread, batch 64, forward / backward ms: 64 ->
    128 channels at stride 2 onto 4x4 outputs 1.60 / 5.06 per sample, 1.47 / 2.53 per
    chunk; the 3-channel 32x32 layer 1.05 / 2.34 per sample, 2.09 / 3.63 per chunk)."""
    return P >= K


def _sample_major(cols):
    """The (K + 1, nc P) scratch array under _columns's (nc, K + 1, P) view of it."""
    nc, rows, P = cols.shape
    return cols.transpose(1, 0, 2).reshape(rows, nc * P)


class _ConvOutput:
    """Where the fast convolution's chunks go: straight into out (N, F, H', W'), or, with
    pooling, into a scratch chunk that is max-pooled into pooled/argmax while it is still
    in cache, so the convolution's full output is never written; with relu too, each
    pooled chunk is then clamped at zero in place."""

    def __init__(self, shape, dtype, pool=None, relu=False):
        self.shape, self.dtype, self.pool, self.relu = shape, dtype, pool, relu
        self.out = np.empty(shape, dtype=dtype) if pool is None else None
        if pool is not None:
            N, F = shape[:2]
            Hp, Wp = pool[3:]
            self.pooled = np.empty((N, F, Hp, Wp), dtype=dtype)
            self.argmax = np.empty((N, F, Hp, Wp), dtype=np.intc)

    def chunk(self, n0, nc):
        """The (nc, F, H', W') array that samples n0 .. n0 + nc of the output go to."""
        if self.pool is None:
            return self.out[n0:n0 + nc]
        return _scratch("conv_output", (nc, *self.shape[1:]), self.dtype)

    def done(self, n0, nc, out, threads):
        if self.pool is None:
            return
        ph, pw, stride = self.pool[:3]
        pooled = self.pooled[n0:n0 + nc]
        _max_pool_into(out, pooled, self.argmax[n0:n0 + nc], ph, pw, stride, threads)
        if self.relu:
            np.maximum(pooled, 0, out=pooled)


def _conv_forward(x, w, b, conv_param, pool_param=None, relu=False):
    """The host fast convolution into a _ConvOutput (pooled when pool_param is given, then
    relu'd with relu); returns it and the convolution's cache."""
    x, w, b, (stride, pad, Ho, Wo) = _conv_operands(x, w, b, conv_param)
    N = x.shape[0]
    F, C, HH, WW = w.shape
    pool = None if pool_param is None else pool_geometry(Ho, Wo, pool_param)
    sink = _ConvOutput((N, F, Ho, Wo), x.dtype, pool, relu)
    cache = (x, w, b is not None, stride, pad)
    bias = b if b is not None else np.zeros(F, dtype=x.dtype)
    if _uses_winograd(w, stride):
        _conv_forward_winograd(x, w, bias, pad, sink)
        return sink, cache
    P, K = Ho * Wo, C * HH * WW
    if _is_pointwise(w, stride, pad):
        w_rows = w.reshape(F, C)

        def pointwise_chunk(n0, nc, threads):
            out = sink.chunk(n0, nc)
            np.matmul(w_rows, x[n0:n0 + nc].reshape(nc, C, P), out=out.reshape(nc, F, P))
            if b is not None:
                out += b[:, None, None]
            sink.done(n0, nc, out, threads)

        map_chunks(pointwise_chunk, _sample_chunks(N, (C + F) * P * x.itemsize))
        return sink, cache
    # The bias is the weight of an input that is always 1: a last column of the filter rows
    # against a row of ones under the columns, so the GEMM adds it on the way out.
    w_rows = np.concatenate([w.reshape(F, K), bias[:, None]], axis=1)  # (F, K + 1)

    def chunk(n0, nc, threads):
        cols = _columns(x, n0, nc, w.shape, stride, pad, Ho, Wo, threads)  # (nc, K + 1, P)
        out = sink.chunk(n0, nc)
        if _per_sample_gemms(K, P):
            # A GEMM per sample (F, K + 1) @ (K + 1, P), straight into the sample's output
            # planes: with one GEMM over the chunk's nc P columns its (F, nc P) product
            # would need a copy into the (nc, F, P) layout, which took a third of the time
            # of a 3-channel layer's forward.
            np.matmul(w_rows, cols, out=out.reshape(nc, F, P))
        else:
            products = _scratch("conv_products", (F, nc * P), x.dtype)
            np.matmul(w_rows, _sample_major(cols), out=products)
            out.reshape(nc, F, P)[...] = products.reshape(F, nc, P).transpose(1, 0, 2)
        sink.done(n0, nc, out, threads)

    map_chunks(chunk, _sample_chunks(N, (K + 1) * P * x.itemsize))
    return sink, cache


def conv_forward_fast(x, w, b, conv_param):
    """Convolution by chunked im2col + a GEMM per sample (Winograd for 3x3 stride-1
    convolutions of 16 channels or more; no im2col for 1x1 stride-1 unpadded ones).
    Contract of conv_forward_naive; b may be None.

    x: (N, C, H, W), w: (F, C, HH, WW), b: (F,) or None. Returns out (N, F, H', W'), cache.
    """
    if not is_host(x):
        return conv_forward_gather(x, w, b, conv_param)
    sink, cache = _conv_forward(x, w, b, conv_param)
    return sink.out, cache


def conv_max_pool_forward_fast(x, w, b, conv_param, pool_param, relu=False):
    """conv_forward_fast followed by max_pool_forward_fast (then relu_forward, with relu),
    each chunk of the convolution's output pooled while it is in cache (the (N, F, H', W')
    output is never stored: the backward pass needs only the argmax). Pooling before the
    relu is the same function with the same gradient (relu is monotone, so it commutes
    with max) on a pool-size times smaller relu. Returns out (N, F, H'', W'') and
    (conv_cache, pool_cache, relu_cache): the caches the layers would return, relu_cache
    (out itself: out > 0 where the relu passes its gradient) None without relu."""
    if not is_host(x):
        conv_out, conv_cache = conv_forward_gather(x, w, b, conv_param)
        out, pool_cache = max_pool_forward_fast(conv_out, pool_param)
        out, relu_cache = relu_forward(out) if relu else (out, None)
        return out, (conv_cache, pool_cache, relu_cache)
    sink, conv_cache = _conv_forward(x, w, b, conv_param, pool_param, relu)
    return sink.pooled, (conv_cache, (sink.shape, sink.dtype, sink.argmax),
                         sink.pooled if relu else None)


class _ConvGradient:
    """Where the fast convolution's backward pass reads its output gradient from, chunk by
    chunk: dout (N, F, H', W') itself, or, after a fused max pool, a scratch chunk that the
    pooled gradient is routed back into (by the pool's argmax) just before it is used,
    through the relu's mask (relu_out > 0) after a fused relu."""

    def __init__(self, shape, dout=None, dpooled=None, argmax=None, relu_out=None):
        self.shape, self.dout, self.dpooled, self.argmax = shape, dout, dpooled, argmax
        self.relu_out = relu_out

    def chunk(self, n0, nc, threads):
        """The (nc, F, H', W') output gradient of samples n0 .. n0 + nc."""
        if self.dpooled is None:
            return self.dout[n0:n0 + nc]
        dout = _scratch("conv_output_grad", (nc, *self.shape[1:]), self.dpooled.dtype)
        relu_out = None if self.relu_out is None else self.relu_out[n0:n0 + nc]
        _max_unpool_into(self.dpooled[n0:n0 + nc], self.argmax[n0:n0 + nc], dout, threads,
                         relu_out)
        return dout


def _conv_backward(grad, cache, need_dx):
    """The host fast convolution's dx, dw, db for the output gradient grad (a
    _ConvGradient) and the forward's cache."""
    x, w, has_bias, stride, pad = cache
    N = x.shape[0]
    F, C, HH, WW = w.shape
    Ho, Wo = grad.shape[2:]
    P, K = Ho * Wo, C * HH * WW
    dx = np.empty_like(x) if need_dx else None
    if _uses_winograd(w, stride):
        dw, db = _conv_backward_winograd(x, w, grad, pad, dx)
        return dx, dw, db.astype(x.dtype) if has_bias else None
    w_rows_t = w.reshape(F, K).T  # (K, F)
    pointwise = _is_pointwise(w, stride, pad)

    def chunk(n0, nc, threads):
        """This chunk's share of [dw^T; db] (K + 1, F) in float64; its dx in place."""
        grad_samples = grad.chunk(n0, nc, threads).reshape(nc, F, P)
        if pointwise:  # the samples are their own columns (C, P)
            cols = x[n0:n0 + nc].reshape(nc, C, P)
            share = np.empty((K + 1, F))
            products = np.matmul(cols, grad_samples.transpose(0, 2, 1))  # (nc, C, F)
            share[:K] = products.sum(axis=0, dtype=np.float64)
            share[K] = grad_samples.sum(axis=(0, 2), dtype=np.float64)
            if need_dx:
                np.matmul(w_rows_t, grad_samples, out=dx[n0:n0 + nc].reshape(nc, C, P))
            return share
        cols = _columns(x, n0, nc, w.shape, stride, pad, Ho, Wo, threads)  # (nc, K + 1, P)
        cols_flat = _sample_major(cols)  # (K + 1, nc P), the same memory
        # [dw^T; db] = the sum over samples of cols dout^T: the ones row gives db. The
        # columns are then no longer needed: their buffer receives the column gradients.
        if _per_sample_gemms(K, P):
            share = np.matmul(cols, grad_samples.transpose(0, 2, 1)).sum(axis=0,
                                                                          dtype=np.float64)
            if need_dx:
                np.matmul(w_rows_t, grad_samples, out=cols[:, :K])
        else:  # one GEMM each over the chunk's nc P columns
            grads = _scratch("conv_grad_columns", (F, nc * P), x.dtype)
            grads.reshape(F, nc, P)[...] = grad_samples.transpose(1, 0, 2)
            share = np.matmul(cols_flat, grads.T).astype(np.float64)  # (K + 1, F)
            if need_dx:
                np.matmul(w_rows_t, grads, out=cols_flat[:K])
        if need_dx:
            _kernels.col2im_samples(cols_flat[:K], dx, n0, HH, WW, pad, stride, Ho, Wo,
                                    threads)
        return share

    # The chunks' shares summed in chunk order: the same result whichever worker ran which
    # chunk (the chunks themselves depend on the thread count, see _sample_chunks).
    shares = map_chunks(chunk, _sample_chunks(N, (K + 1) * P * x.itemsize))
    total = sum(shares, np.zeros((K + 1, F)))
    dw = np.ascontiguousarray(total[:K].T, dtype=x.dtype).reshape(w.shape)
    return dx, dw, total[K].astype(x.dtype) if has_bias else None


def _conv_output_shape(cache):
    x, w, _, stride, pad = cache
    return (x.shape[0], w.shape[0],
            *conv_output_size(x.shape[2], x.shape[3], w.shape[2], w.shape[3], stride, pad))


def conv_backward_fast(dout, cache, need_dx=True):
    """dout: (N, F, H', W'). Returns dx (N, C, H, W), dw (F, C, HH, WW), db (F,) or None.

    need_dx=False skips the input gradient (dx is returned as None): a network's first layer
    has no use for it, and it costs a GEMM and a col2im, about half the backward pass.
    """
    if not is_host(dout):
        return conv_backward_gather(dout, cache, need_dx)
    shape = _conv_output_shape(cache)
    dout = check_dout(dout, shape, cache[0].dtype)
    return _conv_backward(_ConvGradient(shape, dout=dout), cache, need_dx)


def conv_max_pool_backward_fast(dout, cache, need_dx=True):
    """Backward of conv_max_pool_forward_fast: (relu_backward,) max_pool_backward_fast
    then conv_backward_fast, each chunk's convolution-output gradient rebuilt from dout
    (N, F, H'', W'') while it is in cache. Returns dx, dw, db as conv_backward_fast."""
    conv_cache, pool_cache, relu_cache = cache
    if not is_host(dout):
        if relu_cache is not None:
            dout = relu_backward(dout, relu_cache)
        return conv_backward_fast(max_pool_backward_fast(dout, pool_cache), conv_cache,
                                  need_dx)
    shape, dtype, argmax = pool_cache
    dout = check_dout(dout, argmax.shape, dtype)
    gradient = _ConvGradient(shape, dpooled=dout, argmax=argmax, relu_out=relu_cache)
    return _conv_backward(gradient, conv_cache, need_dx)


def conv_forward_im2col(x, w, b, conv_param):
    """Unchunked convolution through the public cs231n-layout kernel im2col_cython.

    Same contract as conv_forward_fast; the cache keeps the full column matrix.
    """
    x, w, b, (stride, pad, Ho, Wo) = _conv_operands(x, w, b, conv_param)
    N = x.shape[0]
    F, _, HH, WW = w.shape
    cols = im2col_cython(x, HH, WW, pad, stride)
    product = w.reshape(F, -1) @ cols
    if b is not None:
        product += b[:, None]
    out = np.ascontiguousarray(product.reshape(F, Ho, Wo, N).transpose(3, 0, 1, 2))
    return out, (x, w, b is not None, stride, pad, cols)


def conv_backward_im2col(dout, cache):
    """Backward of conv_forward_im2col. Returns dx, dw, db (db is None without bias)."""
    x, w, has_bias, stride, pad, cols = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = conv_output_size(H, W, HH, WW, stride, pad)
    dout = check_dout(dout, (N, F, Ho, Wo), x.dtype)
    grad_rows = dout.transpose(1, 2, 3, 0).reshape(F, -1)
    dw = (grad_rows @ cols.T).reshape(w.shape)
    dx = col2im_cython(w.reshape(F, -1).T @ grad_rows, N, C, H, W, HH, WW, pad, stride)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db


def conv_forward_strides(x, w, b, conv_param):
    """Convolution whose im2col is a NumPy as_strided view of the padded input.

    Same contract as conv_forward_fast; the columns come out sample-major, the layout the
    col2im of conv_backward_strides expects.
    """
    x, w, b, (stride, pad, Ho, Wo) = _conv_operands(x, w, b, conv_param)
    N, C, _, _ = x.shape
    F, _, HH, WW = w.shape
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Hp, Wp = padded.shape[2:]
    item = padded.itemsize
    patches = np.lib.stride_tricks.as_strided(
        padded,
        shape=(C, HH, WW, N, Ho, Wo),
        strides=(Hp * Wp * item, Wp * item, item, C * Hp * Wp * item,
                 stride * Wp * item, stride * item),
        writeable=False,
    )
    cols = np.ascontiguousarray(patches).reshape(C * HH * WW, N * Ho * Wo)
    product = w.reshape(F, -1) @ cols
    if b is not None:
        product += b[:, None]
    out = np.ascontiguousarray(product.reshape(F, N, Ho, Wo).transpose(1, 0, 2, 3))
    return out, (x, w, b is not None, stride, pad, cols)


def conv_backward_strides(dout, cache):
    """Backward of conv_forward_strides. Returns dx, dw, db (db is None without bias)."""
    x, w, has_bias, stride, pad, cols = cache
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    Ho, Wo = conv_output_size(H, W, HH, WW, stride, pad)
    dout = check_dout(dout, (N, F, Ho, Wo), x.dtype)
    grad_rows = dout.transpose(1, 0, 2, 3).reshape(F, -1)
    dw = (grad_rows @ cols.T).reshape(w.shape)
    dcols = w.reshape(F, -1).T @ grad_rows
    dx = np.empty_like(x)
    _kernels.col2im_samples(dcols, dx, 0, HH, WW, pad, stride, Ho, Wo)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db


# ============================================================================ pooling


def _max_pool_into(x, out, argmax, ph, pw, stride, threads=0):
    """out and argmax (N, C, H', W') = the max pooling of x (N, C, H, W), every (n, c)
    plane a task of the kernel's."""
    N, C, H, W = x.shape
    Ho, Wo = out.shape[2:]
    _kernels.max_pool_planes(x.reshape(N * C, H, W), out.reshape(N * C, Ho, Wo),
                             argmax.reshape(N * C, Ho, Wo), ph, pw, stride, threads)


def _max_unpool_into(dout, argmax, dx, threads=0, relu_out=None):
    """dx (N, C, H, W) = dout (N, C, H', W') routed to the argmax of each window; with
    relu_out (N, C, H', W'), dout * (relu_out > 0) (the relu after the pool's backward)."""
    N, C, H, W = dx.shape
    Ho, Wo = dout.shape[2:]
    if relu_out is not None:
        relu_out = relu_out.reshape(N * C, Ho * Wo)
    _kernels.max_unpool_planes(dout.reshape(N * C, Ho * Wo), argmax.reshape(N * C, Ho * Wo),
                               dx.reshape(N * C, H * W), threads, relu_out)


def max_pool_forward_fast(x, pool_param):
    """Max pooling with any window and stride. Contract of max_pool_forward_naive.

    x: (N, C, H, W). Returns out (N, C, H', W') with H' = 1 + (H - pool_height) // stride,
    and a cache holding the argmax (flat h W + w index per output) for the backward pass.
    """
    if not is_host(x):
        return max_pool_forward_gather(x, pool_param)
    x, (ph, pw, stride, Ho, Wo) = _pool_operands(x, pool_param)
    N, C = x.shape[:2]
    out = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    argmax = np.empty((N, C, Ho, Wo), dtype=np.intc)
    _max_pool_into(x, out, argmax, ph, pw, stride)
    return out, (x.shape, x.dtype, argmax)


def max_pool_backward_fast(dout, cache):
    """Routes each output gradient to the first maximum of its window. Returns dx (N, C, H, W)."""
    if not is_host(dout):
        return max_pool_backward_gather(dout, cache)
    x_shape, dtype, argmax = cache
    dout = check_dout(dout, argmax.shape, dtype)
    dx = np.empty(x_shape, dtype=dtype)
    _max_unpool_into(dout, argmax, dx)
    return dx


def _tiling_windows(x, pool_param):
    """x viewed as (N, C, H', W', ph pw) windows; ValueError unless the windows tile x."""
    x, (ph, pw, stride, Ho, Wo) = _pool_operands(x, pool_param)
    N, C, H, W = x.shape
    if not (ph == pw == stride and H % ph == 0 and W % pw == 0):
        raise ValueError(
            "max_pool_*_reshape needs square windows with stride == pool size that tile the "
            f"input; got {ph}x{pw} windows, stride {stride}, input {H}x{W}"
        )
    tiles = x.reshape(N, C, Ho, ph, Wo, pw).transpose(0, 1, 2, 4, 3, 5)
    return x, tiles.reshape(N, C, Ho, Wo, ph * pw)


def max_pool_forward_reshape(x, pool_param):
    """Max pooling for windows that tile the input, by reshaping; ValueError otherwise."""
    x, windows = _tiling_windows(x, pool_param)
    first_max = windows.argmax(axis=4)[..., None]
    out = np.take_along_axis(windows, first_max, axis=4)[..., 0]
    return out, (x.shape, x.dtype, first_max)


def max_pool_backward_reshape(dout, cache):
    """Backward of max_pool_forward_reshape. Returns dx (N, C, H, W)."""
    (N, C, H, W), dtype, first_max = cache
    Ho, Wo = first_max.shape[2:4]
    ph, pw = H // Ho, W // Wo
    dout = check_dout(dout, (N, C, Ho, Wo), dtype)
    dwindows = np.zeros((N, C, Ho, Wo, ph * pw), dtype=dtype)
    np.put_along_axis(dwindows, first_max, dout[..., None], axis=4)
    dx = dwindows.reshape(N, C, Ho, Wo, ph, pw).transpose(0, 1, 2, 4, 3, 5)
    return np.ascontiguousarray(dx).reshape(N, C, H, W)


def max_pool_forward_im2col(x, pool_param):
    """Max pooling as an argmax over the im2col columns of single-channel planes."""
    x, (ph, pw, stride, Ho, Wo) = _pool_operands(x, pool_param)
    N, C, H, W = x.shape
    cols = np.empty((ph * pw, N * C * Ho * Wo), dtype=x.dtype)
    _kernels.im2col_samples(x.reshape(N * C, 1, H, W), cols, 0, ph, pw, 0, stride, Ho, Wo)
    first_max = cols.argmax(axis=0)
    out = cols[first_max, np.arange(cols.shape[1])].reshape(N, C, Ho, Wo)
    return out, (x.shape, x.dtype, pool_param, first_max)


def max_pool_backward_im2col(dout, cache):
    """Backward of max_pool_forward_im2col. Returns dx (N, C, H, W)."""
    (N, C, H, W), dtype, pool_param, first_max = cache
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    Ho, Wo = pool_output_size(H, W, ph, pw, stride)
    dout = check_dout(dout, (N, C, Ho, Wo), dtype)
    dcols = np.zeros((ph * pw, first_max.size), dtype=dtype)
    dcols[first_max, np.arange(first_max.size)] = dout.ravel()
    dx = np.empty((N * C, 1, H, W), dtype=dtype)
    _kernels.col2im_samples(dcols, dx, 0, ph, pw, 0, stride, Ho, Wo)
    return dx.reshape(N, C, H, W)


def avg_pool_forward_fast(x, pool_param):
    """Average pooling (pool_param as for max pooling). Returns out (N, C, H', W'), cache."""
    if not is_host(x):
        return avg_pool_forward_gather(x, pool_param)
    x, (ph, pw, stride, Ho, Wo) = _pool_operands(x, pool_param)
    N, C, H, W = x.shape
    out = np.empty((N, C, Ho, Wo), dtype=x.dtype)
    _kernels.avg_pool_planes(x.reshape(N * C, H, W), out.reshape(N * C, Ho, Wo), ph, pw, stride)
    return out, (x.shape, x.dtype, (ph, pw, stride, Ho, Wo))


def avg_pool_backward_fast(dout, cache):
    """Spreads each output gradient evenly over its window. Returns dx (N, C, H, W)."""
    if not is_host(dout):
        return avg_pool_backward_gather(dout, cache)
    (N, C, H, W), dtype, (ph, pw, stride, Ho, Wo) = cache
    dout = check_dout(dout, (N, C, Ho, Wo), dtype)
    dx = np.empty((N, C, H, W), dtype=dtype)
    _kernels.avg_unpool_planes(dout.reshape(N * C, Ho, Wo), dx.reshape(N * C, H, W), ph, pw, stride)
    return dx


def global_avg_pool_forward_fast(x):
    """Mean over each channel's spatial positions. x: (N, C, H, W) -> out (N, C), cache."""
    if not is_host(x):
        return global_avg_pool_forward(x)
    x = as_float_array(x, "x", ndim=4)
    x = np.ascontiguousarray(x)
    N, C, H, W = x.shape
    out = np.empty((N, C), dtype=x.dtype)
    _kernels.plane_means(x.reshape(N * C, H * W), out.reshape(N * C))
    return out, (x.shape, x.dtype)


def global_avg_pool_backward_fast(dout, cache):
    """dout: (N, C). Returns dx (N, C, H, W) with dout / (H W) at every position."""
    if not is_host(dout):
        return global_avg_pool_backward(dout, cache)
    (N, C, H, W), dtype = cache
    dout = check_dout(dout, (N, C), dtype)
    dx = np.empty((N, C, H, W), dtype=dtype)
    _kernels.spread_means(dout.reshape(N * C), dx.reshape(N * C, H * W))
    return dx


# ======================================================================== batchnorm


def _spatial_batchnorm_fast(x, gamma, beta, bn_param, relu):
    """Spatial batchnorm (then relu when ``relu``) in compiled per-channel passes."""
    x = as_float_array(x, ndim=4)
    N, C, H, W = x.shape
    x, gamma, beta = norm_operands(x, gamma, beta, (C,))
    if not is_host(x):  # on a GPU: the readable layers, written for any array module
        out, cache = spatial_batchnorm_forward(x, gamma, beta, bn_param)
        if not relu:
            return out, cache
        out, relu_cache = relu_forward(out)
        return out, (cache, relu_cache)
    if bn_param.get("mode") != "train":  # test mode is one affine map: the readable layer
        out, cache = spatial_batchnorm_forward(x, gamma, beta, bn_param)
        return (np.maximum(out, 0) if relu else out), cache
    check_nonempty_batch(x)
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    running_mean, running_var = batchnorm_running_stats(bn_param, C, x.dtype)
    x_planes = np.ascontiguousarray(x).reshape(N, C, H * W)
    out = np.empty_like(x_planes)
    # The relu's mask, one byte a value; without relu the kernel never reads it.
    mask = np.empty(x_planes.shape if relu else (1, 1, 1), dtype=np.uint8)
    mean, var, inv_std = np.empty(C), np.empty(C), np.empty(C)
    gamma, beta = np.ascontiguousarray(gamma), np.ascontiguousarray(beta)
    _kernels.batchnorm_train_forward(x_planes, gamma, beta, eps, relu, out, mask, mean, var,
                                     inv_std)
    bn_param["running_mean"] = (momentum * running_mean + (1 - momentum) * mean).astype(x.dtype)
    bn_param["running_var"] = (momentum * running_var + (1 - momentum) * var).astype(x.dtype)
    # The input, not xhat: the backward recomputes xhat = (x - mean) inv_std as it reads x,
    # so the forward writes one array of the activations' size fewer, and keeps none more
    # alive (x is the convolution's output, which the step holds anyway).
    return out.reshape(x.shape), (x.shape, x_planes, mask, gamma, mean, inv_std, relu)


def _spatial_batchnorm_backward_fast(dout, cache, relu):
    if not is_host(dout):
        if relu:
            cache, relu_cache = cache
            dout = relu_backward(dout, relu_cache)
        return spatial_batchnorm_backward(dout, cache)
    require_train_cache(cache)
    shape, x, mask, gamma, mean, inv_std, relu = cache
    N, C, S = x.shape
    dout = check_dout(dout, shape, x.dtype).reshape(N, C, S)
    dx = np.empty_like(x)
    dgamma, dbeta = np.empty(C), np.empty(C)
    _kernels.batchnorm_train_backward(dout, x, mask, gamma, mean, inv_std, relu, dx, dgamma,
                                      dbeta)
    return dx.reshape(shape), dgamma.astype(x.dtype), dbeta.astype(x.dtype)


def spatial_batchnorm_forward_fast(x, gamma, beta, bn_param):
    """Compiled spatial batchnorm, the contract of layers.spatial_batchnorm_forward.

    x: (N, C, H, W); gamma, beta: (C,). In train mode one parallel task per channel makes
    three passes over its values (mean, variance, normalise) while they sit in cache; the
    cache holds x and the per-channel mean and scale. Returns out (N, C, H, W) and cache.
    """
    return _spatial_batchnorm_fast(x, gamma, beta, bn_param, relu=False)


def spatial_batchnorm_backward_fast(dout, cache):
    """dout: (N, C, H, W). Returns dx (N, C, H, W), dgamma (C,), dbeta (C,)."""
    return _spatial_batchnorm_backward_fast(dout, cache, relu=False)


def spatial_batchnorm_relu_forward_fast(x, gamma, beta, bn_param):
    """relu(spatial_batchnorm(x)) in the same passes: the pair as one layer, so the
    activations are read and written once; the relu's cache is a one-byte mask per value
    instead of its input. Same arguments and returns as the batchnorm."""
    return _spatial_batchnorm_fast(x, gamma, beta, bn_param, relu=True)


def spatial_batchnorm_relu_backward_fast(dout, cache):
    """Backward through the relu and the batchnorm: dx (N, C, H, W), dgamma, dbeta (C,)."""
    return _spatial_batchnorm_backward_fast(dout, cache, relu=True)
