# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled loops behind convlab.fast_layers: typed memoryviews, nogil, OpenMP prange.

Only loops NumPy cannot express live here; validation, chunking and scratch buffers are
Python in convlab/fast_layers.py, and the thread policy is decided in convlab/_threads.py
(which sets how many threads the parallel loops use through set_num_threads).

Column layouts (rows (c * fh + i) * fw + j in both):

* the **cs231n layout** of im2col_cs231n / col2im_cs231n: column ``(h' * W' + w') * N + n``;
* the **sample-major layout** of every fast path: column ``(n * H' + h') * W' + w'``. Each
  (row, sample) pair is one contiguous run of ``H' W'`` values, so im2col and col2im are
  strided row copies, and a GEMM per sample on its ``(C fh fw, H' W')`` block gives that
  sample's ``(F, H', W')`` output in place.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define CONVLAB_OPENMP 1
    static int convlab_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define CONVLAB_OPENMP 0
    static int convlab_omp_max_threads(void) { return 1; }
    #endif
    """
    int CONVLAB_OPENMP
    int convlab_omp_max_threads() nogil

# Threads of every parallel loop below; 1 until convlab._threads decides.
cdef int _num_threads = 1


cdef inline int _threads(int threads=0) noexcept nogil:
    """The team size of a parallel loop: ``threads`` when a caller that runs kernels on
    threads of its own passes it (>= 1), else _num_threads, within the OpenMP limit of the
    calling thread (which threadpoolctl's limits set)."""
    if threads > 0:
        return threads
    return max(1, min(_num_threads, convlab_omp_max_threads()))


def openmp_enabled():
    """True when this module was compiled with OpenMP (else prange runs serially)."""
    return bool(CONVLAB_OPENMP)


def set_num_threads(int threads):
    """Set how many OpenMP threads the parallel loops use (ignored without OpenMP)."""
    global _num_threads
    _num_threads = max(1, threads)


def get_num_threads():
    return _num_threads


cdef int _require(bint ok, str what) except -1:
    """Raise ValueError naming what the arguments must satisfy: the kernels index without
    bounds checks, so a caller's shape mistake must stop here, not corrupt memory."""
    if not ok:
        raise ValueError(f"convlab._kernels: expected {what}")
    return 0


cdef int _require_columns(Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                          Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t n0, int fh, int fw,
                          int pad, int stride, Py_ssize_t Ho, Py_ssize_t Wo) except -1:
    """The sample-major column kernels' contract: cols (C fh fw, nc H' W') for samples
    n0 .. n0 + nc of an (N, C, H, W) array, H' x W' the convolution's output size."""
    _require(fh >= 1 and fw >= 1 and pad >= 0 and stride >= 1, "fh, fw, stride >= 1, pad >= 0")
    _require(Ho == (H + 2 * pad - fh) // stride + 1 and Wo == (W + 2 * pad - fw) // stride + 1
             and Ho >= 1 and Wo >= 1, "Ho, Wo the output size of this convolution")
    _require(rows == C * fh * fw and cols % (Ho * Wo) == 0,
             "cols of shape (C fh fw, nc Ho Wo)")
    _require(0 <= n0 and n0 + cols // (Ho * Wo) <= N, "samples n0 .. n0 + nc within the batch")
    return 0


cdef int _require_tiles(Py_ssize_t N, Py_ssize_t channels, Py_ssize_t Ho, Py_ssize_t Wo,
                        Py_ssize_t planes, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t n0,
                        Py_ssize_t th, Py_ssize_t tw) except -1:
    """The Winograd transforms' contract: a (planes, channels, nc th tw) array of the tiles
    of samples n0 .. n0 + nc, th x tw the m x m tiles that cover an Ho x Wo output, with
    16 planes for F(2x2, 3x3) (m = 2) or 36 for F(4x4, 3x3) (m = 4). Returns m."""
    _require(planes == 16 or planes == 36, "16 planes (F(2x2, 3x3)) or 36 (F(4x4, 3x3))")
    cdef Py_ssize_t m = 2 if planes == 16 else 4
    _require(Ho >= 1 and Wo >= 1 and th == (Ho + m - 1) // m and tw == (Wo + m - 1) // m,
             "th, tw = ceil(Ho / m), ceil(Wo / m) tiles of m x m outputs")
    _require(rows == channels and cols % (th * tw) == 0,
             "tiles of shape (planes, channels, nc th tw)")
    _require(0 <= n0 and n0 + cols // (th * tw) <= N, "samples n0 .. n0 + nc within the batch")
    return m


# ============================================================================ C helpers


cdef inline Py_ssize_t _first_valid(Py_ssize_t offset, Py_ssize_t stride) noexcept nogil:
    """Smallest output index o >= 0 with o * stride - offset >= 0."""
    if offset <= 0:
        return 0
    return (offset + stride - 1) // stride


cdef inline Py_ssize_t _end_valid(Py_ssize_t offset, Py_ssize_t size, Py_ssize_t stride,
                                  Py_ssize_t n_out) noexcept nogil:
    """One past the largest output index o < n_out with o * stride - offset < size."""
    cdef Py_ssize_t last = size - 1 + offset
    if last < 0:
        return 0
    return min(last // stride + 1, n_out)


cdef inline void _gather_plane(const floating* plane, floating* dst, Py_ssize_t H,
                               Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t i,
                               Py_ssize_t j, Py_ssize_t pad, Py_ssize_t stride) noexcept nogil:
    """dst[h', w'] = plane[h' s + i - pad, w' s + j - pad], zero where that is padding."""
    cdef Py_ssize_t y_lo = min(_first_valid(pad - i, stride), Ho)
    cdef Py_ssize_t y_hi = max(_end_valid(pad - i, H, stride, Ho), y_lo)
    cdef Py_ssize_t x_lo = min(_first_valid(pad - j, stride), Wo)
    cdef Py_ssize_t x_hi = max(_end_valid(pad - j, W, stride, Wo), x_lo)
    cdef Py_ssize_t yo, xo, src_row
    cdef floating* out_row
    if y_lo > 0:
        memset(dst, 0, y_lo * Wo * sizeof(floating))
    for yo in range(y_lo, y_hi):
        out_row = dst + yo * Wo
        src_row = (yo * stride + i - pad) * W + j - pad
        if x_lo > 0:
            memset(out_row, 0, x_lo * sizeof(floating))
        if stride == 1:
            memcpy(out_row + x_lo, plane + src_row + x_lo, (x_hi - x_lo) * sizeof(floating))
        elif stride == 2:  # a constant stride, which the compiler vectorises
            for xo in range(x_lo, x_hi):
                out_row[xo] = plane[src_row + 2 * xo]
        else:
            for xo in range(x_lo, x_hi):
                out_row[xo] = plane[src_row + xo * stride]
        if x_hi < Wo:
            memset(out_row + x_hi, 0, (Wo - x_hi) * sizeof(floating))
    if y_hi < Ho:
        memset(dst + y_hi * Wo, 0, (Ho - y_hi) * Wo * sizeof(floating))


cdef inline void _scatter_add_plane(const floating* src, floating* plane, Py_ssize_t H,
                                    Py_ssize_t W, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t i,
                                    Py_ssize_t j, Py_ssize_t pad,
                                    Py_ssize_t stride) noexcept nogil:
    """Adjoint of _gather_plane: plane[h' s + i - pad, w' s + j - pad] += src[h', w']."""
    cdef Py_ssize_t y_lo = min(_first_valid(pad - i, stride), Ho)
    cdef Py_ssize_t y_hi = max(_end_valid(pad - i, H, stride, Ho), y_lo)
    cdef Py_ssize_t x_lo = min(_first_valid(pad - j, stride), Wo)
    cdef Py_ssize_t x_hi = max(_end_valid(pad - j, W, stride, Wo), x_lo)
    cdef Py_ssize_t yo, xo, dst_row
    cdef const floating* src_row
    for yo in range(y_lo, y_hi):
        src_row = src + yo * Wo
        dst_row = (yo * stride + i - pad) * W + j - pad
        if stride == 1:
            for xo in range(x_lo, x_hi):
                plane[dst_row + xo] += src_row[xo]
        else:
            for xo in range(x_lo, x_hi):
                plane[dst_row + xo * stride] += src_row[xo]


cdef inline double _sum(const floating* values, Py_ssize_t size) noexcept nogil:
    """Sum in double over eight independent accumulators.

    A single running sum waits on the previous add every element; eight chains keep the
    adder pipelined (the compiler may not reorder float adds itself), and double keeps long
    float32 sums accurate.
    """
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0
    cdef Py_ssize_t k = 0
    while k + 8 <= size:
        s0 += values[k]
        s1 += values[k + 1]
        s2 += values[k + 2]
        s3 += values[k + 3]
        s4 += values[k + 4]
        s5 += values[k + 5]
        s6 += values[k + 6]
        s7 += values[k + 7]
        k += 8
    while k < size:
        s0 += values[k]
        k += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


# ============================================================= sample-major column kernels


def im2col_samples(const floating[:, :, :, ::1] x, floating[:, ::1] cols, Py_ssize_t n0,
                    int fh, int fw, int pad, int stride, Py_ssize_t Ho, Py_ssize_t Wo,
                    int threads=0):
    """Columns of samples n0 .. n0 + nc of x into cols (C fh fw, nc H' W'), sample-major."""
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t P = Ho * Wo
    cdef Py_ssize_t nc = cols.shape[1] // P if P > 0 else 0
    cdef Py_ssize_t task, row, n, c, i, j
    _require_columns(x.shape[0], C, H, W, cols.shape[0], cols.shape[1], n0, fh, fw, pad,
                     stride, Ho, Wo)
    with nogil:
        # One task per (row, sample): a contiguous run of P outputs, enough tasks to balance.
        for task in prange(C * fh * fw * nc, schedule="static", num_threads=_threads(threads)):
            row = task // nc
            n = task % nc
            c = row // (fh * fw)
            i = (row // fw) % fh
            j = row % fw
            _gather_plane(&x[n0 + n, c, 0, 0], &cols[row, n * P], H, W, Ho, Wo, i, j, pad,
                          stride)


def col2im_samples(const floating[:, ::1] cols, floating[:, :, :, ::1] dx, Py_ssize_t n0,
                    int fh, int fw, int pad, int stride, Py_ssize_t Ho, Py_ssize_t Wo,
                    int threads=0):
    """dx[n0 .. n0 + nc] = adjoint of im2col_samples applied to cols (overwrites dx)."""
    cdef Py_ssize_t C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t P = Ho * Wo
    cdef Py_ssize_t nc = cols.shape[1] // P if P > 0 else 0
    cdef Py_ssize_t task, n, c, i, j
    cdef floating* plane
    _require_columns(dx.shape[0], C, H, W, cols.shape[0], cols.shape[1], n0, fh, fw, pad,
                     stride, Ho, Wo)
    with nogil:
        # Each task owns one (sample, channel) plane, so the accumulation needs no atomics.
        for task in prange(nc * C, schedule="static", num_threads=_threads(threads)):
            n = task // C
            c = task % C
            plane = &dx[n0 + n, c, 0, 0]
            memset(plane, 0, H * W * sizeof(floating))
            for i in range(fh):
                for j in range(fw):
                    _scatter_add_plane(&cols[(c * fh + i) * fw + j, n * P], plane, H, W, Ho,
                                       Wo, i, j, pad, stride)


# ====================================================================== cs231n kernels


def im2col_cs231n(const floating[:, :, :, ::1] x, floating[:, ::1] cols, int fh, int fw,
                   int pad, int stride, Py_ssize_t Ho, Py_ssize_t Wo):
    """cols (C fh fw, H' W' N) in the cs231n layout; parallel over rows."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t row, c, i, j, yo, xo, h, w, n, col
    with nogil:
        for row in prange(C * fh * fw, schedule="static", num_threads=_threads()):
            c = row // (fh * fw)
            i = (row // fw) % fh
            j = row % fw
            for yo in range(Ho):
                h = yo * stride + i - pad
                for xo in range(Wo):
                    w = xo * stride + j - pad
                    col = (yo * Wo + xo) * N
                    if 0 <= h < H and 0 <= w < W:
                        for n in range(N):
                            cols[row, col + n] = x[n, c, h, w]
                    else:
                        for n in range(N):
                            cols[row, col + n] = 0


def col2im_cs231n(const floating[:, ::1] cols, floating[:, :, :, ::1] dx, int fh, int fw,
                   int pad, int stride, Py_ssize_t Ho, Py_ssize_t Wo):
    """dx (zeroed by the caller) += the cs231n-layout cols scattered back to the image."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t row, c, i, j, yo, xo, h, w, n, col
    with nogil:
        # Parallel over channels: each thread owns dx[:, c], so += is race-free.
        for c in prange(C, schedule="static", num_threads=_threads()):
            for i in range(fh):
                for j in range(fw):
                    row = (c * fh + i) * fw + j
                    for yo in range(Ho):
                        h = yo * stride + i - pad
                        if h < 0 or h >= H:
                            continue
                        for xo in range(Wo):
                            w = xo * stride + j - pad
                            if w < 0 or w >= W:
                                continue
                            col = (yo * Wo + xo) * N
                            for n in range(N):
                                dx[n, c, h, w] += cols[row, col + n]


# ====================================================================== pooling kernels


cdef inline Py_ssize_t _first_nan(const floating[:, ::1] plane, Py_ssize_t h0, Py_ssize_t w0,
                                  int ph, int pw) noexcept nogil:
    """Flat index h W + w of the first NaN of the window at (h0, w0) (one is known to be there)."""
    cdef Py_ssize_t i, j
    for i in range(ph):
        for j in range(pw):
            if plane[h0 + i, w0 + j] != plane[h0 + i, w0 + j]:
                return (h0 + i) * plane.shape[1] + w0 + j
    return -1


cdef void _max_pool_plane(const floating[:, ::1] plane, floating[:, ::1] out,
                          int[:, ::1] argmax, int ph, int pw, int stride) noexcept nogil:
    """The windows of one (H, W) plane, any size and stride, scanned in order (see
    max_pool_planes for the rules)."""
    cdef Py_ssize_t W = plane.shape[1], Ho = out.shape[0], Wo = out.shape[1]
    cdef Py_ssize_t yo, xo, i, j, h0, w0, best_at, nan_at
    cdef floating best, v, total
    for yo in range(Ho):
        h0 = yo * stride
        for xo in range(Wo):
            w0 = xo * stride
            best = plane[h0, w0]
            best_at = h0 * W + w0
            total = 0
            for i in range(ph):
                for j in range(pw):
                    v = plane[h0 + i, w0 + j]
                    total = total + v
                    if v > best:
                        best = v
                        best_at = (h0 + i) * W + w0 + j
            if total != total:
                nan_at = _first_nan(plane, h0, w0, ph, pw)
                if nan_at >= 0:
                    best_at = nan_at
                    best = plane[nan_at // W, nan_at % W]
            out[yo, xo] = best
            argmax[yo, xo] = <int>best_at


cdef bint _max_pool_2x2_plane(const floating* plane, int W, floating* out, int* argmax,
                              Py_ssize_t Ho, Py_ssize_t Wo) noexcept nogil:
    """The 2x2, stride-2 windows of one plane, the common case, without a branch: the
    first maximum of each row pair (a, b), (c, d), then of the two, is the first maximum
    of a, b, c, d in order. Selects instead of jumps let gcc vectorise the loop, and random
    data made the jumps mispredict about once a window. Returns whether a window's sum
    was NaN (a NaN, or inf - inf), for which the plane must be scanned again in order."""
    cdef Py_ssize_t yo, xo
    cdef const floating* row0
    cdef const floating* row1
    cdef floating* out_row
    cdef int* argmax_row
    cdef floating a, b, c, d, ab, cd, total
    cdef int ab_at, cd_at, at
    cdef int suspect = 0
    for yo in range(Ho):
        row0 = plane + 2 * yo * W
        row1 = row0 + W
        out_row = out + yo * Wo
        argmax_row = argmax + yo * Wo
        at = <int>(2 * yo * W)
        for xo in range(Wo):
            a = row0[2 * xo]
            b = row0[2 * xo + 1]
            c = row1[2 * xo]
            d = row1[2 * xo + 1]
            ab = b if b > a else a
            ab_at = 1 if b > a else 0
            cd = d if d > c else c
            cd_at = W + 1 if d > c else W
            out_row[xo] = cd if cd > ab else ab
            argmax_row[xo] = at + 2 * <int>xo + (cd_at if cd > ab else ab_at)
            total = a + b + c + d
            suspect = suspect | (total != total)
    return suspect


def max_pool_planes(const floating[:, :, ::1] x, floating[:, :, ::1] out,
                     int[:, :, ::1] argmax, int ph, int pw, int stride, int threads=0):
    """out = window maxima of each (H, W) plane; argmax = flat index h W + w of the first max.

    As np.argmax in the naive layer: the first maximum wins (strict '>'), and the first NaN
    beats any number. The scan only compares with '>' and sums the window (a NaN anywhere
    makes the sum NaN), so the hot loop has no NaN test (one in the comparison made it 4x
    slower); a window whose sum is NaN is scanned again for its first NaN (inf - inf is
    NaN too: then none is found and the maximum stands)."""
    cdef Py_ssize_t planes = x.shape[0], W = x.shape[2]
    cdef Py_ssize_t Ho = out.shape[1], Wo = out.shape[2]
    cdef Py_ssize_t t
    # float64's selects do not vectorise on the SSE2 baseline (no 64-bit integer compare),
    # and as scalar code they were slower than the in-order scan.
    cdef bint fast = floating is float and ph == 2 and pw == 2 and stride == 2
    with nogil:
        for t in prange(planes, schedule="static", num_threads=_threads(threads)):
            if not fast or _max_pool_2x2_plane(&x[t, 0, 0], <int>W, &out[t, 0, 0],
                                               &argmax[t, 0, 0], Ho, Wo):
                _max_pool_plane(x[t], out[t], argmax[t], ph, pw, stride)


def max_unpool_planes(const floating[:, ::1] dout, const int[:, ::1] argmax,
                       floating[:, ::1] dx, int threads=0,
                       const floating[:, ::1] relu_out=None):
    """dx (planes, H W) = 0, then dx[t, argmax[t, k]] += dout[t, k] (overlaps accumulate);
    with relu_out (planes, K), dout[t, k] * (relu_out[t, k] > 0) instead: the gradient
    through a relu that followed the pool (a product, as relu_backward's: NaN * 0 is NaN)."""
    cdef Py_ssize_t planes = dx.shape[0], HW = dx.shape[1], K = dout.shape[1]
    cdef Py_ssize_t t, k
    cdef bint masked = relu_out is not None
    with nogil:
        for t in prange(planes, schedule="static", num_threads=_threads(threads)):
            memset(&dx[t, 0], 0, HW * sizeof(floating))
            if masked:
                for k in range(K):
                    dx[t, argmax[t, k]] += dout[t, k] * (relu_out[t, k] > 0)
            else:
                for k in range(K):
                    dx[t, argmax[t, k]] += dout[t, k]


def avg_pool_planes(const floating[:, :, ::1] x, floating[:, :, ::1] out, int ph, int pw,
                     int stride):
    """out = window means of each (H, W) plane, summed in double."""
    cdef Py_ssize_t planes = x.shape[0], Ho = out.shape[1], Wo = out.shape[2]
    cdef Py_ssize_t t, yo, xo, i, j
    cdef double total
    cdef double scale = 1.0 / (ph * pw)
    with nogil:
        for t in prange(planes, schedule="static", num_threads=_threads()):
            for yo in range(Ho):
                for xo in range(Wo):
                    total = 0
                    for i in range(ph):
                        for j in range(pw):
                            total = total + x[t, yo * stride + i, xo * stride + j]
                    out[t, yo, xo] = <floating>(total * scale)


def avg_unpool_planes(const floating[:, :, ::1] dout, floating[:, :, ::1] dx, int ph, int pw,
                       int stride):
    """dx = 0, then each dout entry spread evenly over its window (overlaps accumulate)."""
    cdef Py_ssize_t planes = dx.shape[0], H = dx.shape[1], W = dx.shape[2]
    cdef Py_ssize_t Ho = dout.shape[1], Wo = dout.shape[2]
    cdef Py_ssize_t t, yo, xo, i, j
    cdef floating share
    cdef floating scale = <floating>(1.0 / (ph * pw))
    with nogil:
        for t in prange(planes, schedule="static", num_threads=_threads()):
            memset(&dx[t, 0, 0], 0, H * W * sizeof(floating))
            for yo in range(Ho):
                for xo in range(Wo):
                    share = dout[t, yo, xo] * scale
                    for i in range(ph):
                        for j in range(pw):
                            dx[t, yo * stride + i, xo * stride + j] += share


def plane_means(const floating[:, ::1] x, floating[::1] out):
    """out[t] = mean of x[t, :], summed in double."""
    cdef Py_ssize_t planes = x.shape[0], HW = x.shape[1]
    cdef Py_ssize_t t
    with nogil:
        for t in prange(planes, schedule="static", num_threads=_threads()):
            out[t] = <floating>(_sum(&x[t, 0], HW) / HW)


def spread_means(const floating[::1] dout, floating[:, ::1] dx):
    """dx[t, :] = dout[t] / (H W), the adjoint of plane_means."""
    cdef Py_ssize_t planes = dx.shape[0], HW = dx.shape[1]
    cdef Py_ssize_t t, k
    cdef floating share
    with nogil:
        for t in prange(planes, schedule="static", num_threads=_threads()):
            share = <floating>(dout[t] / <double>HW)
            for k in range(HW):
                dx[t, k] = share


# ========================================================================= batchnorm


cdef inline double _centred_squares(const floating* values, Py_ssize_t size,
                                    double mean) noexcept nogil:
    """Sum of (value - mean)^2 in double, over four independent accumulators."""
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0, d0, d1, d2, d3
    cdef Py_ssize_t k = 0
    while k + 4 <= size:
        d0 = values[k] - mean
        d1 = values[k + 1] - mean
        d2 = values[k + 2] - mean
        d3 = values[k + 3] - mean
        s0 += d0 * d0
        s1 += d1 * d1
        s2 += d2 * d2
        s3 += d3 * d3
        k += 4
    while k < size:
        d0 = values[k] - mean
        s0 += d0 * d0
        k += 1
    return (s0 + s1) + (s2 + s3)


cdef inline void _normalize_plane(const floating* x, floating* out, unsigned char* mask,
                                  Py_ssize_t size, floating mean, floating scale,
                                  floating gamma, floating beta, bint relu) noexcept nogil:
    """out = gamma xhat + beta with xhat = (x - mean) scale; when relu, out is clamped at 0
    and mask records where it was kept (1) or zeroed (0)."""
    cdef Py_ssize_t k
    cdef floating o
    if relu:
        for k in range(size):
            o = gamma * ((x[k] - mean) * scale) + beta
            mask[k] = o > 0
            out[k] = o if o > 0 else 0
    else:
        for k in range(size):
            out[k] = gamma * ((x[k] - mean) * scale) + beta


cdef void _batchnorm_channel_forward(const floating[:, :, ::1] x, Py_ssize_t c, double eps,
                                     floating gamma, floating beta, bint relu,
                                     floating[:, :, ::1] out, unsigned char[:, :, ::1] mask,
                                     double* mean, double* var,
                                     double* inv_std) noexcept nogil:
    """One channel of batchnorm_train_forward: its statistics over (N, S), then out.
    The channel's N S values (256 KB at N=64, 32x32, float32) stay in L2 between passes."""
    cdef Py_ssize_t N = x.shape[0], S = x.shape[2]
    cdef Py_ssize_t n
    cdef double total = 0, centred = 0, m
    for n in range(N):
        total = total + _sum(&x[n, c, 0], S)
    m = total / (N * S)
    # Two passes, as NumPy's var: the mean first, then squares of centred values, so a large
    # mean cannot cancel the variance away.
    for n in range(N):
        centred = centred + _centred_squares(&x[n, c, 0], S, m)
    mean[0] = m
    var[0] = centred / (N * S)
    inv_std[0] = 1 / sqrt(var[0] + eps)
    for n in range(N):
        _normalize_plane(&x[n, c, 0], &out[n, c, 0], &mask[n, c, 0] if relu else NULL, S,
                         <floating>m, <floating>inv_std[0], gamma, beta, relu)


def batchnorm_train_forward(const floating[:, :, ::1] x, const floating[::1] gamma,
                            const floating[::1] beta, double eps, bint relu,
                            floating[:, :, ::1] out, unsigned char[:, :, ::1] mask,
                            double[::1] mean, double[::1] var, double[::1] inv_std):
    """Spatial batchnorm in train mode over x viewed as (N, C, S), S = H W: per channel the
    batch mean and variance over (N, S), xhat = (x - mean) inv_std with inv_std =
    1 / sqrt(var + eps), out = gamma xhat + beta, then max(out, 0) when relu. Writes out,
    the relu's 0/1 mask (N, C, S) when relu (without relu mask is not read, and may be any
    3-d uint8 array), and mean, var, inv_std (C,); xhat is not stored (the backward
    recomputes it from x). Parallel over channels."""
    cdef Py_ssize_t C = x.shape[1]
    cdef Py_ssize_t c
    _require(out.shape[0] == x.shape[0] and out.shape[1] == C and out.shape[2] == x.shape[2]
             and gamma.shape[0] == C and beta.shape[0] == C and mean.shape[0] == C
             and var.shape[0] == C and inv_std.shape[0] == C
             and (not relu or (mask.shape[0] == x.shape[0] and mask.shape[1] == C
                               and mask.shape[2] == x.shape[2])),
             "out (and mask, with relu) of x's shape (N, C, S), gamma, beta and the "
             "statistics (C,)")
    with nogil:
        for c in prange(C, schedule="static", num_threads=_threads()):
            _batchnorm_channel_forward(x, c, eps, gamma[c], beta[c], relu, out, mask,
                                       &mean[c], &var[c], &inv_std[c])


cdef inline void _apply_mask(const floating* dout, const unsigned char* mask,
                             floating* masked, Py_ssize_t size) noexcept nogil:
    """masked = dout * mask (mask 0 or 1): arithmetic, where a comparison recomputed from
    xhat became a branch that mispredicted on every other value."""
    cdef Py_ssize_t k
    for k in range(size):
        masked[k] = dout[k] * mask[k]


cdef inline double _centred_dot(const floating* d, const floating* x, Py_ssize_t size,
                                floating mean) noexcept nogil:
    """Sum of d (x - mean) over four independent accumulators: the products in x's
    precision (as d xhat was, from a stored xhat), summed in double."""
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t k = 0
    while k + 4 <= size:
        s0 += d[k] * (x[k] - mean)
        s1 += d[k + 1] * (x[k + 1] - mean)
        s2 += d[k + 2] * (x[k + 2] - mean)
        s3 += d[k + 3] * (x[k + 3] - mean)
        k += 4
    while k < size:
        s0 += d[k] * (x[k] - mean)
        k += 1
    return (s0 + s1) + (s2 + s3)


cdef inline void _input_gradient(const floating* d, const floating* x, floating* dx,
                                 Py_ssize_t size, floating scale, floating mean_d,
                                 floating mean, floating slope) noexcept nogil:
    """dx = scale (d - mean_d - (x - mean) slope); d may be dx itself."""
    cdef Py_ssize_t k
    for k in range(size):
        dx[k] = scale * (d[k] - mean_d - (x[k] - mean) * slope)


cdef void _batchnorm_channel_backward(const floating[:, :, ::1] dout,
                                      const floating[:, :, ::1] x,
                                      const unsigned char[:, :, ::1] mask, Py_ssize_t c,
                                      floating gamma, double mean, double inv_std, bint relu,
                                      floating[:, :, ::1] dx, double* dgamma,
                                      double* dbeta) noexcept nogil:
    cdef Py_ssize_t N = dout.shape[0], S = dout.shape[2]
    cdef Py_ssize_t n
    cdef double sum_d = 0, sum_dxhat = 0, M = N * S
    cdef const floating* d
    for n in range(N):
        d = &dout[n, c, 0]
        if relu:  # the masked gradient goes into dx, which the last pass overwrites
            _apply_mask(d, &mask[n, c, 0], &dx[n, c, 0], S)
            d = &dx[n, c, 0]
        sum_d = sum_d + _sum(d, S)
        sum_dxhat = sum_dxhat + _centred_dot(d, &x[n, c, 0], S, <floating>mean)
    sum_dxhat = sum_dxhat * inv_std  # xhat = (x - mean) inv_std
    dbeta[0] = sum_d
    dgamma[0] = sum_dxhat
    # dx = gamma inv_std / M (M d - sum d - xhat sum d xhat): the closed form of
    # batchnorm_backward_alt, with xhat sum d xhat / M = (x - mean) inv_std sum d xhat / M.
    for n in range(N):
        d = &dx[n, c, 0] if relu else &dout[n, c, 0]
        _input_gradient(d, &x[n, c, 0], &dx[n, c, 0], S, <floating>(gamma * inv_std),
                        <floating>(sum_d / M), <floating>mean,
                        <floating>(inv_std * sum_dxhat / M))


def batchnorm_train_backward(const floating[:, :, ::1] dout, const floating[:, :, ::1] x,
                             const unsigned char[:, :, ::1] mask, const floating[::1] gamma,
                             const double[::1] mean, const double[::1] inv_std, bint relu,
                             floating[:, :, ::1] dx, double[::1] dgamma, double[::1] dbeta):
    """Backward of batchnorm_train_forward (through its relu, by mask, when relu) from its
    input x and statistics: dx (N, C, S), dgamma and dbeta (C,) in double. Parallel over
    channels."""
    cdef Py_ssize_t C = dout.shape[1]
    cdef Py_ssize_t c
    _require(x.shape[0] == dout.shape[0] and x.shape[1] == C and x.shape[2] == dout.shape[2]
             and dx.shape[0] == dout.shape[0] and dx.shape[1] == C
             and dx.shape[2] == dout.shape[2] and gamma.shape[0] == C and mean.shape[0] == C
             and inv_std.shape[0] == C and dgamma.shape[0] == C and dbeta.shape[0] == C
             and (not relu or (mask.shape[0] == dout.shape[0] and mask.shape[1] == C
                               and mask.shape[2] == dout.shape[2])),
             "x, dx (and mask, with relu) of dout's shape (N, C, S), gamma and the "
             "statistics (C,)")
    with nogil:
        for c in prange(C, schedule="static", num_threads=_threads()):
            _batchnorm_channel_backward(dout, x, mask, c, gamma[c], mean[c], inv_std[c], relu,
                                        dx, &dgamma[c], &dbeta[c])


# ============================================================= Winograd F(2x2, 3x3) kernels
#
# A 3x3 stride-1 convolution computed on 2x2 output tiles (Lavin & Gray, 2016):
#     Y = A^T [ (G g G^T) . (B^T d B) ] A
# for the 4x4 input tile d under each 2x2 output tile and the 3x3 filter g. The 16
# elementwise products, summed over input channels, are 16 GEMMs (F, C) @ (C, T) over the
# T tiles of a chunk of samples: 16 multiplies per 4 outputs instead of 36. The layouts:
#     V[k, c, t] = (B^T d B)[k // 4, k % 4] of channel c's tile t   (16, C, T)
#     M[k, f, t] = the GEMM products, before the output transform   (16, F, T)
# with tile t = (n * th + ty) * tw + tx of sample n (counted from the chunk's first), whose
# outputs are rows 2 ty, 2 ty + 1 and columns 2 tx, 2 tx + 1, and whose input tile starts at
# row 2 ty - pad, column 2 tx - pad. The backward kernels apply the transposed transforms:
# dM = A dY A^T and dd = B dV B^T.
#
#     B^T = [1  0 -1  0]    A^T = [1  1  1  0]
#           [0  1  1  0]          [0  1 -1 -1]
#           [0 -1  1  0]
#           [0  1  0 -1]


# The per-plane loops: each is called by one parallel task and allocates its scratch itself
# (a C array declared in a prange's function would be shared by threads). ``k_stride`` is
# the distance between V's (or M's) 16 planes k, V.strides[0] in elements (the Python side
# may pad it); within a plane k the (C, tiles) matrix must be C-contiguous. The pointer is
# at tile 0 of the (channel or filter, sample) the task owns.


cdef inline void _bt4_rows(const floating* d0, const floating* d1, const floating* d2,
                           const floating* d3, floating* out, Py_ssize_t stride,
                           Py_ssize_t n) noexcept nogil:
    """out's rows 0..3 (stride apart) = B^T (d0, d1, d2, d3) elementwise for n elements:
    d0 - d2, d1 + d2, d2 - d1, d1 - d3. A loop a row, one store stream each (see
    _a_rows)."""
    cdef floating* out1 = out + stride
    cdef floating* out2 = out + 2 * stride
    cdef floating* out3 = out + 3 * stride
    cdef Py_ssize_t e
    for e in range(n):
        out[e] = d0[e] - d2[e]
    for e in range(n):
        out1[e] = d1[e] + d2[e]
    for e in range(n):
        out2[e] = d2[e] - d1[e]
    for e in range(n):
        out3[e] = d1[e] - d3[e]


cdef void _input_tiles(const floating* plane, Py_ssize_t H, Py_ssize_t W, int pad,
                       Py_ssize_t th, Py_ssize_t tw, floating* v, Py_ssize_t k_stride,
                       Py_ssize_t t_stride) noexcept nogil:
    # A row of tiles at a time: r = B^T d down the columns of the four input rows under
    # it (rows past the plane's edge read as zeros), over the tiles' width L = 2 tw + 2
    # with the padding columns zero, read straight from the plane; then B along the
    # columns, tile by tile, writing each of the 16 planes' runs of tiles t_stride apart.
    cdef Py_ssize_t L = 2 * tw + 2
    cdef floating* r = <floating*> calloc(4 * L + W, sizeof(floating))
    cdef floating* zeros = r + 4 * L  # stands in for the rows above and below the plane
    cdef const floating* d0
    cdef const floating* d1
    cdef const floating* d2
    cdef const floating* d3
    cdef floating* ri
    cdef floating* out
    cdef Py_ssize_t ty, tx, i, y
    for ty in range(th):
        y = 2 * ty - pad
        d0 = plane + y * W if 0 <= y < H else zeros
        d1 = plane + (y + 1) * W if 0 <= y + 1 < H else zeros
        d2 = plane + (y + 2) * W if 0 <= y + 2 < H else zeros
        d3 = plane + (y + 3) * W if 0 <= y + 3 < H else zeros
        # r = B^T d at buffer column pad + j of input column j (every one fits: the tiles
        # cover the padded width, L >= W + 2 pad); the padding columns stay zero from calloc.
        _bt4_rows(d0, d1, d2, d3, r + pad, L, W)
        for i in range(4):  # v = r B, tile by tile along the row
            ri = r + i * L
            out = v + 4 * i * k_stride + ty * tw * t_stride
            for tx in range(tw):
                out[tx * t_stride] = ri[2 * tx] - ri[2 * tx + 2]
                out[k_stride + tx * t_stride] = ri[2 * tx + 1] + ri[2 * tx + 2]
                out[2 * k_stride + tx * t_stride] = ri[2 * tx + 2] - ri[2 * tx + 1]
                out[3 * k_stride + tx * t_stride] = ri[2 * tx + 1] - ri[2 * tx + 3]
    free(r)


# Channels per task of _input_tiles_across_channels: the runs it writes, 64 bytes of float32.
cdef enum:
    _CHANNEL_BLOCK = 16


cdef void _input_tiles_across_channels(const floating* x, Py_ssize_t plane_stride,
                                       Py_ssize_t cb, Py_ssize_t H, Py_ssize_t W, int pad,
                                       Py_ssize_t th, Py_ssize_t tw, int m, floating* v,
                                       Py_ssize_t k_stride,
                                       Py_ssize_t t_stride) noexcept nogil:
    # The input transform of F(m x m, 3x3) (m = 2 or 4) for cb channels (planes
    # plane_stride apart from x) at once, into a V whose channels are contiguous (V^T's
    # layout): each tile's (m + 2)^2 values then go out as runs of cb channels, where
    # plane-by-plane loops store single values C apart. The channels are first
    # interleaved into a zero-padded (Hp, Lp, cb) copy of the tiles' area, so that every
    # later step is a loop over contiguous channels: B^T down the columns of a row of
    # tiles (whole padded rows), then B along each tile's columns.
    cdef Py_ssize_t n = m + 2  # input tile size
    cdef Py_ssize_t Lp = m * tw + 2, Hp = m * th + 2  # the tiles cover H + 2 pad, W + 2 pad
    cdef Py_ssize_t row = Lp * cb  # one padded row of all cb channels
    cdef floating* xp = <floating*> calloc((Hp + n) * row, sizeof(floating))
    cdef floating* r = xp + Hp * row  # B^T d of a row of tiles: n rows of Lp x cb
    cdef const floating* src
    cdef const floating* d
    cdef floating* dst
    cdef floating* ri
    cdef floating* out
    cdef Py_ssize_t c, y, j, ty, tx, i
    for c in range(cb):
        for y in range(H):
            src = x + c * plane_stride + y * W
            dst = xp + (y + pad) * row + pad * cb + c
            for j in range(W):
                dst[j * cb] = src[j]
    for ty in range(th):
        d = xp + m * ty * row
        if m == 2:
            _bt4_rows(d, d + row, d + 2 * row, d + 3 * row, r, row, row)
        else:
            _bt6_rows(d, d + row, d + 2 * row, d + 3 * row, d + 4 * row, d + 5 * row, r,
                      row, row)
        for tx in range(tw):  # v = r B, tile by tile: columns m tx .. m tx + n - 1 of r
            for i in range(n):
                ri = r + i * row + m * tx * cb
                out = v + n * i * k_stride + (ty * tw + tx) * t_stride
                if m == 2:
                    _bt4_rows(ri, ri + cb, ri + 2 * cb, ri + 3 * cb, out, k_stride, cb)
                else:
                    _bt6_rows(ri, ri + cb, ri + 2 * cb, ri + 3 * cb, ri + 4 * cb,
                              ri + 5 * cb, out, k_stride, cb)
    free(xp)


cdef void _output_tiles(const floating* m, Py_ssize_t k_stride, floating bias, floating* plane,
                        Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t th,
                        Py_ssize_t tw) noexcept nogil:
    # A row of tiles at a time into two output rows of the tiles' width 2 tw, then copied
    # to the plane without what lies past its edge (odd H' or W').
    cdef floating* rows = <floating*> malloc(4 * tw * sizeof(floating))
    cdef floating* row1 = rows + 2 * tw
    cdef const floating* mt
    cdef floating s0, s1, s2, s3, q0, q1, q2, q3
    cdef Py_ssize_t ty, tx, i
    for ty in range(th):
        mt = m + ty * tw
        for tx in range(tw):
            # s = A^T m: the sums of m's rows 0 + 1 + 2 (s*) and 1 - 2 - 3 (q*), per column
            s0 = mt[tx] + mt[4 * k_stride + tx] + mt[8 * k_stride + tx]
            s1 = mt[k_stride + tx] + mt[5 * k_stride + tx] + mt[9 * k_stride + tx]
            s2 = mt[2 * k_stride + tx] + mt[6 * k_stride + tx] + mt[10 * k_stride + tx]
            s3 = mt[3 * k_stride + tx] + mt[7 * k_stride + tx] + mt[11 * k_stride + tx]
            q0 = mt[4 * k_stride + tx] - mt[8 * k_stride + tx] - mt[12 * k_stride + tx]
            q1 = mt[5 * k_stride + tx] - mt[9 * k_stride + tx] - mt[13 * k_stride + tx]
            q2 = mt[6 * k_stride + tx] - mt[10 * k_stride + tx] - mt[14 * k_stride + tx]
            q3 = mt[7 * k_stride + tx] - mt[11 * k_stride + tx] - mt[15 * k_stride + tx]
            rows[2 * tx] = s0 + s1 + s2 + bias  # y = s A
            rows[2 * tx + 1] = s1 - s2 - s3 + bias
            row1[2 * tx] = q0 + q1 + q2 + bias
            row1[2 * tx + 1] = q1 - q2 - q3 + bias
        for i in range(2):
            if 2 * ty + i < Ho:
                memcpy(plane + (2 * ty + i) * Wo, rows + i * 2 * tw, Wo * sizeof(floating))
    free(rows)


cdef inline void _a_rows(const floating* x, const floating* y, floating* out,
                         Py_ssize_t stride, Py_ssize_t T) noexcept nogil:
    """out's rows 0..3 (stride apart) = A (x, y) for every t < T: x, x + y, x - y, -y, with
    A = [[1, 0], [1, 1], [1, -1], [0, -1]] (F(2x2, 3x3)'s output-gradient transform). A
    loop a row: each has one store stream, which gcc vectorises with a run-time overlap
    check; it gives up on a loop of four."""
    cdef Py_ssize_t t
    cdef floating* out1 = out + stride
    cdef floating* out2 = out + 2 * stride
    cdef floating* out3 = out + 3 * stride
    for t in range(T):
        out[t] = x[t]
    for t in range(T):
        out1[t] = x[t] + y[t]
    for t in range(T):
        out2[t] = x[t] - y[t]
    for t in range(T):
        out3[t] = -y[t]


cdef inline void _split_pairs(const floating* row, Py_ssize_t W, floating* even,
                              floating* odd, Py_ssize_t tw) noexcept nogil:
    """even[tx], odd[tx] = row[2 tx], row[2 tx + 1] for tx < tw, zero past the row's W."""
    cdef Py_ssize_t tx, half = W // 2
    for tx in range(half):
        even[tx] = row[2 * tx]
    for tx in range(half):
        odd[tx] = row[2 * tx + 1]
    if W % 2:
        even[half] = row[W - 1]
        odd[half] = 0


cdef double _output_grad_tiles(const floating* plane, Py_ssize_t Ho, Py_ssize_t Wo,
                               Py_ssize_t th, Py_ssize_t tw, floating* dm,
                               Py_ssize_t k_stride) noexcept nogil:
    """dm = A dy A^T of every tile; returns the sum of the plane."""
    # Every tile's dy = [[a0, a1], [b0, b1]] is first split into four arrays over the
    # tiles (zero past an odd edge); then A on the left, per column (a, b): the rows
    # a, a + b, a - b, -b of each column in c (8 T); then A^T on the right, per row of
    # that: dm's 16 planes. Each pass runs over all T tiles of the plane, not a row of
    # tiles: 4-16 tiles a row is too short a loop to vectorise well.
    cdef Py_ssize_t T = th * tw
    cdef floating* corners = <floating*> malloc(12 * T * sizeof(floating))
    cdef floating* a0 = corners
    cdef floating* a1 = corners + T
    cdef floating* b0 = corners + 2 * T
    cdef floating* b1 = corners + 3 * T
    cdef floating* c = corners + 4 * T  # (2 columns, 4 rows, T): A dy
    cdef Py_ssize_t ty, i
    cdef double total
    for ty in range(th):
        _split_pairs(plane + 2 * ty * Wo, Wo, a0 + ty * tw, a1 + ty * tw, tw)
        if 2 * ty + 1 < Ho:
            _split_pairs(plane + (2 * ty + 1) * Wo, Wo, b0 + ty * tw, b1 + ty * tw, tw)
        else:
            memset(b0 + ty * tw, 0, tw * sizeof(floating))
            memset(b1 + ty * tw, 0, tw * sizeof(floating))
    total = _sum(corners, 4 * T)
    _a_rows(a0, b0, c, T, T)
    _a_rows(a1, b1, c + 4 * T, T, T)
    for i in range(4):  # dm[4 i + j] = (A (c0_i, c1_i))[j]
        _a_rows(c + i * T, c + (4 + i) * T, dm + 4 * i * k_stride, k_stride, T)
    free(corners)
    return total


cdef void _input_grad_tiles(const floating* v, Py_ssize_t k_stride, floating* plane,
                            Py_ssize_t H, Py_ssize_t W, int pad, Py_ssize_t th,
                            Py_ssize_t tw) noexcept nogil:
    """plane = the sum over tiles of B v B^T at each tile's input position."""
    # A row of tiles at a time: u_i = v's rows times B^T, four rows of the tiles' width
    # L = 2 tw + 2 in which neighbouring tiles overlap by two columns (each entry written
    # once: the left tile's share is carried in registers), then B along the rows gives
    # the four input rows, added to the plane where they lie inside it.
    cdef Py_ssize_t L = 2 * tw + 2
    cdef floating* u = <floating*> malloc(4 * L * sizeof(floating))
    cdef floating* ui
    cdef floating* dst
    cdef const floating* vi
    cdef floating w0, w1, w2, w3, carry2, carry3
    cdef Py_ssize_t ty, tx, i, y, x, x_lo, x_hi
    x_lo = min(max(pad, 0), L)
    x_hi = max(min(W + pad, L), x_lo)
    memset(plane, 0, H * W * sizeof(floating))
    for ty in range(th):
        for i in range(4):
            vi = v + ty * tw + 4 * i * k_stride
            ui = u + i * L
            carry2 = 0
            carry3 = 0
            for tx in range(tw):
                w0 = vi[tx]  # (v B^T)[i] = v0, v1 - v2 + v3, v1 + v2 - v0, -v3
                w1 = vi[k_stride + tx] - vi[2 * k_stride + tx] + vi[3 * k_stride + tx]
                w2 = vi[k_stride + tx] + vi[2 * k_stride + tx] - w0
                w3 = -vi[3 * k_stride + tx]
                ui[2 * tx] = w0 + carry2
                ui[2 * tx + 1] = w1 + carry3
                carry2 = w2
                carry3 = w3
            ui[2 * tw] = carry2
            ui[2 * tw + 1] = carry3
        # input rows 2 ty - pad + a, a = 0 .. 3, are the rows of B u: u0, u1 - u2 + u3,
        # u1 + u2 - u0, -u3 (a loop each, so none branches per element)
        y = 2 * ty - pad
        if 0 <= y < H:
            dst = plane + y * W
            for x in range(x_lo, x_hi):
                dst[x - pad] += u[x]
        if 0 <= y + 1 < H:
            dst = plane + (y + 1) * W
            for x in range(x_lo, x_hi):
                dst[x - pad] += u[L + x] - u[2 * L + x] + u[3 * L + x]
        if 0 <= y + 2 < H:
            dst = plane + (y + 2) * W
            for x in range(x_lo, x_hi):
                dst[x - pad] += u[L + x] + u[2 * L + x] - u[x]
        if 0 <= y + 3 < H:
            dst = plane + (y + 3) * W
            for x in range(x_lo, x_hi):
                dst[x - pad] -= u[3 * L + x]
    free(u)


cdef inline void _g_rows(const floating* x0, const floating* x1, const floating* x2,
                         floating* out, Py_ssize_t stride, Py_ssize_t n) noexcept nogil:
    """out's rows 0..3 (stride apart) = G (x0, x1, x2) elementwise for n elements: x0,
    (x0 + x1 + x2) / 2, (x0 - x1 + x2) / 2, x2, with G = [[1, 0, 0], [1/2, 1/2, 1/2],
    [1/2, -1/2, 1/2], [0, 0, 1]]. A loop a row, one store stream each, as gcc vectorises."""
    cdef floating half = 0.5
    cdef floating* out1 = out + stride
    cdef floating* out2 = out + 2 * stride
    cdef floating* out3 = out + 3 * stride
    cdef Py_ssize_t e
    for e in range(n):
        out[e] = x0[e]
    for e in range(n):
        out1[e] = (x0[e] + x1[e] + x2[e]) * half
    for e in range(n):
        out2[e] = (x0[e] - x1[e] + x2[e]) * half
    for e in range(n):
        out3[e] = x2[e]


cdef inline void _gt_rows(const floating* y0, const floating* y1, const floating* y2,
                          const floating* y3, floating* out, Py_ssize_t stride,
                          Py_ssize_t n) noexcept nogil:
    """out's rows 0..2 (stride apart) = G^T (y0, y1, y2, y3) elementwise for n elements:
    y0 + (y1 + y2) / 2, (y1 - y2) / 2, (y1 + y2) / 2 + y3 (the adjoint of _g_rows)."""
    cdef floating half = 0.5
    cdef floating* out1 = out + stride
    cdef floating* out2 = out + 2 * stride
    cdef Py_ssize_t e
    for e in range(n):
        out[e] = y0[e] + (y1[e] + y2[e]) * half
    for e in range(n):
        out1[e] = (y1[e] - y2[e]) * half
    for e in range(n):
        out2[e] = (y1[e] + y2[e]) * half + y3[e]


cdef void _filter_tiles(const floating* g, Py_ssize_t C, floating* u,
                        Py_ssize_t k_stride) noexcept nogil:
    """u[k_stride (4 i + j) + c] = (G g_c G^T)[i, j] for the C 3x3 filters g_c = g[9 c ..
    9 c + 9] (row-major) of one output filter: each of U's 16 planes gets a run of C
    values. Element by element the same sums as one filter at a time, but written plane
    by plane: one filter's 16 values lie k_stride apart, a power of two for the usual
    sizes, and such stores all land in the same cache set."""
    # g's 9 taps as 9 rows over c, then G g (4 x 3 rows over c), then (G g) G^T.
    cdef floating* taps = <floating*> malloc(21 * C * sizeof(floating))
    cdef floating* gg = taps + 9 * C
    cdef Py_ssize_t c, a, b, i
    for a in range(9):
        for c in range(C):
            taps[a * C + c] = g[9 * c + a]
    for b in range(3):  # column b of G g: rows i = 0..3 at gg[(3 i + b) C]
        _g_rows(taps + b * C, taps + (3 + b) * C, taps + (6 + b) * C, gg + b * C, 3 * C, C)
    for i in range(4):  # row i of (G g) G^T: U's planes 4 i .. 4 i + 3
        _g_rows(gg + 3 * i * C, gg + (3 * i + 1) * C, gg + (3 * i + 2) * C,
                u + 4 * i * k_stride, k_stride, C)
    free(taps)


cdef void _filter_grad_tiles(const floating* d, Py_ssize_t C, Py_ssize_t k_stride,
                             floating* dg) noexcept nogil:
    """dg[9 c + 3 a + b] = (G^T d_c G)[a, b] for the C 4x4 d_c whose element k is
    d[k k_stride + c]: the adjoint of _filter_tiles, for one output filter's row of dw."""
    cdef floating* gd = <floating*> malloc(21 * C * sizeof(floating))  # G^T d: 3 x 4 rows
    cdef floating* taps = gd + 12 * C  # then (G^T d) G: 9 rows over c
    cdef Py_ssize_t c, a, j
    for j in range(4):  # column j of G^T d: rows a = 0..2 at gd[(4 a + j) C]
        _gt_rows(d + j * k_stride, d + (4 + j) * k_stride, d + (8 + j) * k_stride,
                 d + (12 + j) * k_stride, gd + j * C, 4 * C, C)
    for a in range(3):  # row a of (G^T d) G: taps 3 a .. 3 a + 2
        _gt_rows(gd + 4 * a * C, gd + (4 * a + 1) * C, gd + (4 * a + 2) * C,
                 gd + (4 * a + 3) * C, taps + 3 * a * C, C, C)
    for a in range(9):
        for c in range(C):
            dg[9 * c + a] = taps[a * C + c]
    free(gd)


# ============================================================= Winograd F(4x4, 3x3) kernels
#
# The same convolution on 4x4 output tiles: 6x6 input tiles d, 36 elementwise products per
# 16 outputs (F(2x2, 3x3): 16 per 4), so 36 GEMMs (F, C) @ (C, T) with 1.78x fewer
# multiplies in all and a transformed input 2.25x the input's size instead of 4x. Layouts
# as above with 36 planes: V[6 i + j, c, t] = (B^T d B)[i, j]; tile t's outputs are rows
# 4 ty .. 4 ty + 3 and its input tile starts at row 4 ty - pad, column 4 tx - pad.
#
#     B^T = [4  0 -5  0  1  0]    A^T = [1  1  1  1  1  0]
#           [0 -4 -4  1  1  0]          [0  1 -1  2 -2  0]
#           [0  4 -4 -1  1  0]          [0  1  1  4  4  0]
#           [0 -2 -1  2  1  0]          [0  1 -1  8 -8  1]
#           [0  2 -1 -2  1  0]
#           [0  4  0 -5  0  1]
#
# (the filter transform G (6x3) is a GEMM in convlab.fast_layers). Each of the four
# transforms is two passes of a six-point helper below, one down the tiles' columns and one
# along their rows, each over many tiles at once (applied tile by tile, they ran scalar);
# between the tiles and the planes the values are gathered or scattered four columns
# apart (_split_quads, _gather_columns, _join_quads, _add_columns). The helpers'
# coefficients are constants of the arrays' type: Cython writes a bare 4 as the double
# 4.0, which put float32 arithmetic through double and back.


cdef inline void _bt6_rows(const floating* d0, const floating* d1, const floating* d2,
                           const floating* d3, const floating* d4, const floating* d5,
                           floating* out, Py_ssize_t stride, Py_ssize_t n) noexcept nogil:
    """out's rows 0..5 (stride apart) = B^T (d0, ..., d5) elementwise for n elements: a
    loop a row, one store stream each, as gcc vectorises (see _a_rows)."""
    cdef floating two = 2, four = 4, five = 5
    cdef Py_ssize_t e
    for e in range(n):
        out[e] = four * d0[e] - five * d2[e] + d4[e]
    for e in range(n):
        out[stride + e] = (d4[e] - four * d2[e]) + (d3[e] - four * d1[e])
    for e in range(n):
        out[2 * stride + e] = (d4[e] - four * d2[e]) - (d3[e] - four * d1[e])
    for e in range(n):
        out[3 * stride + e] = (d4[e] - d2[e]) + two * (d3[e] - d1[e])
    for e in range(n):
        out[4 * stride + e] = (d4[e] - d2[e]) - two * (d3[e] - d1[e])
    for e in range(n):
        out[5 * stride + e] = four * d1[e] - five * d3[e] + d5[e]


cdef inline void _at6_rows(const floating* m, Py_ssize_t s_in, floating* out,
                           Py_ssize_t s_out, floating bias, Py_ssize_t n) noexcept nogil:
    """out's rows 0..3 (s_out apart) = A^T (m's rows 0..5, s_in apart) + bias, elementwise
    for n elements."""
    cdef floating two = 2, four = 4, eight = 8
    cdef const floating* m1 = m + s_in
    cdef const floating* m2 = m + 2 * s_in
    cdef const floating* m3 = m + 3 * s_in
    cdef const floating* m4 = m + 4 * s_in
    cdef const floating* m5 = m + 5 * s_in
    cdef floating* out1 = out + s_out
    cdef floating* out2 = out + 2 * s_out
    cdef floating* out3 = out + 3 * s_out
    cdef Py_ssize_t e
    for e in range(n):
        out[e] = m[e] + (m1[e] + m2[e]) + (m3[e] + m4[e]) + bias
    for e in range(n):
        out1[e] = (m1[e] - m2[e]) + two * (m3[e] - m4[e]) + bias
    for e in range(n):
        out2[e] = (m1[e] + m2[e]) + four * (m3[e] + m4[e]) + bias
    for e in range(n):
        out3[e] = (m1[e] - m2[e]) + eight * (m3[e] - m4[e]) + m5[e] + bias


cdef inline void _a6_rows(const floating* y, Py_ssize_t s_in, floating* out,
                          Py_ssize_t s_out, Py_ssize_t n) noexcept nogil:
    """out's rows 0..5 (s_out apart) = A (y's rows 0..3, s_in apart), elementwise for n
    elements: the adjoint of _at6_rows."""
    cdef floating two = 2, four = 4, eight = 8
    cdef const floating* y1 = y + s_in
    cdef const floating* y2 = y + 2 * s_in
    cdef const floating* y3 = y + 3 * s_in
    cdef Py_ssize_t e
    for e in range(n):
        out[e] = y[e]
    for e in range(n):
        out[s_out + e] = (y[e] + y2[e]) + (y1[e] + y3[e])
    for e in range(n):
        out[2 * s_out + e] = (y[e] + y2[e]) - (y1[e] + y3[e])
    for e in range(n):
        out[3 * s_out + e] = (y[e] + four * y2[e]) + (two * y1[e] + eight * y3[e])
    for e in range(n):
        out[4 * s_out + e] = (y[e] + four * y2[e]) - (two * y1[e] + eight * y3[e])
    for e in range(n):
        out[5 * s_out + e] = y3[e]


cdef inline void _b6_rows(const floating* v, Py_ssize_t s_in, floating* out,
                          Py_ssize_t s_out, Py_ssize_t n) noexcept nogil:
    """out's rows 0..5 (s_out apart) = B (v's rows 0..5, s_in apart), elementwise for n
    elements: the adjoint of _bt6_rows."""
    cdef floating two = 2, four = 4, five = 5
    cdef const floating* v1 = v + s_in
    cdef const floating* v2 = v + 2 * s_in
    cdef const floating* v3 = v + 3 * s_in
    cdef const floating* v4 = v + 4 * s_in
    cdef const floating* v5 = v + 5 * s_in
    cdef Py_ssize_t e
    for e in range(n):
        out[e] = four * v[e]
    for e in range(n):
        out[s_out + e] = -four * (v1[e] - v2[e]) - two * (v3[e] - v4[e]) + four * v5[e]
    for e in range(n):
        out[2 * s_out + e] = -five * v[e] - four * (v1[e] + v2[e]) - (v3[e] + v4[e])
    for e in range(n):
        out[3 * s_out + e] = (v1[e] - v2[e]) + two * (v3[e] - v4[e]) - five * v5[e]
    for e in range(n):
        out[4 * s_out + e] = v[e] + (v1[e] + v2[e]) + (v3[e] + v4[e])
    for e in range(n):
        out[5 * s_out + e] = v5[e]


cdef inline void _split_quads(const floating* row, Py_ssize_t W, floating* out,
                              Py_ssize_t stride, Py_ssize_t tw) noexcept nogil:
    """out[b stride + tx] = row[4 tx + b] for b < 4, tx < tw: a row's columns by their
    place in its 4-wide tiles, zero past the row's W."""
    cdef Py_ssize_t tx, b, whole = W // 4
    for tx in range(whole):
        out[tx] = row[4 * tx]
        out[stride + tx] = row[4 * tx + 1]
        out[2 * stride + tx] = row[4 * tx + 2]
        out[3 * stride + tx] = row[4 * tx + 3]
    if whole < tw:  # the last tile reaches past the edge
        for b in range(4):
            out[b * stride + whole] = row[4 * whole + b] if 4 * whole + b < W else 0


cdef inline void _gather_columns(const floating* row, floating* out, Py_ssize_t stride,
                                 Py_ssize_t tw) noexcept nogil:
    """out[j stride + tx] = row[4 tx + j] for j < 6, tx < tw: each 6-wide tile's columns
    of a row 4 tw + 2 long (neighbouring tiles share two columns)."""
    cdef Py_ssize_t tx, j
    for j in range(6):
        for tx in range(tw):
            out[j * stride + tx] = row[4 * tx + j]


cdef inline void _join_quads(const floating* y, Py_ssize_t stride, floating* row,
                             Py_ssize_t tw) noexcept nogil:
    """row[4 tx + b] = y[b stride + tx] for b < 4, tx < tw: the inverse of _split_quads."""
    cdef Py_ssize_t tx
    for tx in range(tw):
        row[4 * tx] = y[tx]
        row[4 * tx + 1] = y[stride + tx]
        row[4 * tx + 2] = y[2 * stride + tx]
        row[4 * tx + 3] = y[3 * stride + tx]


cdef inline void _add_columns(const floating* d, Py_ssize_t stride, floating* row,
                              Py_ssize_t tw) noexcept nogil:
    """row[4 tx + j] = the sum of d[j stride + tx] over the tiles tx (tx < tw, j < 6) that
    cover that column: the adjoint of _gather_columns (row is 4 tw + 2 long)."""
    cdef Py_ssize_t tx
    row[4 * tw] = 0
    row[4 * tw + 1] = 0
    for tx in range(tw):  # columns 0..3 of each tile, one tile's apiece
        row[4 * tx] = d[tx]
        row[4 * tx + 1] = d[stride + tx]
        row[4 * tx + 2] = d[2 * stride + tx]
        row[4 * tx + 3] = d[3 * stride + tx]
    for tx in range(tw):  # columns 4, 5: the next tile's columns 0, 1
        row[4 * tx + 4] += d[4 * stride + tx]
        row[4 * tx + 5] += d[5 * stride + tx]


# The F(4x4, 3x3) loops: each is called by one parallel task, for one channel (or filter)
# of all nc samples of a chunk, whose planes lie sample_stride elements apart: each helper
# call then runs over the nc T tiles that are contiguous in V (or M), where a sample's T
# tiles (4-16 at CIFAR's sizes) made loops too short to gain from vectorising. Within a
# plane k of V (or M), a channel's tiles must be contiguous.


cdef void _input_tiles4(const floating* x, Py_ssize_t sample_stride, Py_ssize_t nc,
                        Py_ssize_t H, Py_ssize_t W, int pad, Py_ssize_t th, Py_ssize_t tw,
                        floating* v, Py_ssize_t k_stride) noexcept nogil:
    # Per row of tiles, r = B^T d down the columns of the six input rows under it, over the
    # tiles' width L = 4 tw + 2 (zero in the padding), and each tile's six columns of r
    # gathered into c (6 rows i x 6 columns j of the nc T tiles); then B along the columns
    # j, over all tiles, into V's 36 planes (whose tiles must be contiguous).
    cdef Py_ssize_t L = 4 * tw + 2, T = th * tw, Tn = nc * T
    cdef floating* r = <floating*> malloc((6 * L + W + 36 * Tn) * sizeof(floating))
    cdef floating* zeros = r + 6 * L  # stands in for the rows above and below the plane
    cdef floating* c = zeros + W  # c[(6 i + j) Tn + t]
    cdef const floating* plane
    cdef const floating* d[6]
    cdef Py_ssize_t n, ty, i, y
    memset(r, 0, (6 * L + W) * sizeof(floating))
    for n in range(nc):
        plane = x + n * sample_stride
        for ty in range(th):
            for i in range(6):
                y = 4 * ty - pad + i
                d[i] = plane + y * W if 0 <= y < H else zeros
            _bt6_rows(d[0], d[1], d[2], d[3], d[4], d[5], r + pad, L, W)
            for i in range(6):
                _gather_columns(r + i * L, c + 6 * i * Tn + n * T + ty * tw, Tn, tw)
    for i in range(6):
        _bt6_rows(c + 6 * i * Tn, c + (6 * i + 1) * Tn, c + (6 * i + 2) * Tn,
                  c + (6 * i + 3) * Tn, c + (6 * i + 4) * Tn, c + (6 * i + 5) * Tn,
                  v + 6 * i * k_stride, k_stride, Tn)
    free(r)


cdef void _output_tiles4(const floating* m, Py_ssize_t k_stride, floating bias,
                         floating* out, Py_ssize_t sample_stride, Py_ssize_t nc,
                         Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t th,
                         Py_ssize_t tw) noexcept nogil:
    # A^T down the tiles' six columns j (p: 4 rows a x 6 columns j of the nc T tiles), then
    # along the four rows a (y: 4 x 4, the bias added), then each output row's tiles side
    # by side into its plane; by way of a row buffer where the last tile reaches past the
    # edge (a memcpy a row for every row cost a third of the transform at 16 x 16).
    cdef Py_ssize_t T = th * tw, Tn = nc * T
    cdef floating* p = <floating*> malloc((40 * Tn + 4 * tw) * sizeof(floating))
    cdef floating* y = p + 24 * Tn  # y[(4 a + b) Tn + t]
    cdef floating* row = y + 16 * Tn  # one output row of the tiles' width 4 tw
    cdef floating* dst
    cdef Py_ssize_t n, ty, j, a
    for j in range(6):  # p[(6 a + j) Tn + t]
        _at6_rows(m + j * k_stride, 6 * k_stride, p + j * Tn, 6 * Tn, 0, Tn)
    for a in range(4):
        _at6_rows(p + 6 * a * Tn, Tn, y + 4 * a * Tn, Tn, bias, Tn)
    for n in range(nc):
        for ty in range(th):
            for a in range(min(4, Ho - 4 * ty)):
                dst = out + n * sample_stride + (4 * ty + a) * Wo
                if Wo == 4 * tw:
                    _join_quads(y + 4 * a * Tn + n * T + ty * tw, Tn, dst, tw)
                else:
                    _join_quads(y + 4 * a * Tn + n * T + ty * tw, Tn, row, tw)
                    memcpy(dst, row, Wo * sizeof(floating))
    free(p)


cdef void _output_grad_tiles4(const floating* dout, Py_ssize_t sample_stride, Py_ssize_t nc,
                              Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t th, Py_ssize_t tw,
                              floating* dm, Py_ssize_t k_stride, double* sums,
                              Py_ssize_t sums_stride) noexcept nogil:
    """dm = A dy A^T of every 4x4 tile dy of the nc planes (zero past their edges), and
    sums[n sums_stride] = the sum of plane n."""
    # The tiles' 16 values split into y (4 rows a x 4 columns b of the nc T tiles), then A
    # down the columns (q: 6 rows i x 4 columns b), then A along the rows into dm's planes.
    cdef Py_ssize_t T = th * tw, Tn = nc * T
    cdef floating* y = <floating*> malloc(40 * Tn * sizeof(floating))  # y[(4 a + b) Tn + t]
    cdef floating* q = y + 16 * Tn  # q[(4 i + b) Tn + t]
    cdef const floating* plane
    cdef Py_ssize_t n, ty, a, b, i
    for n in range(nc):
        plane = dout + n * sample_stride
        for ty in range(th):
            for a in range(4):
                if 4 * ty + a < Ho:
                    _split_quads(plane + (4 * ty + a) * Wo, Wo,
                                 y + 4 * a * Tn + n * T + ty * tw, Tn, tw)
                else:
                    for b in range(4):
                        memset(y + (4 * a + b) * Tn + n * T + ty * tw, 0,
                               tw * sizeof(floating))
        sums[n * sums_stride] = _sum(plane, Ho * Wo)
    for b in range(4):
        _a6_rows(y + b * Tn, 4 * Tn, q + b * Tn, 4 * Tn, Tn)
    for i in range(6):
        _a6_rows(q + 4 * i * Tn, Tn, dm + 6 * i * k_stride, k_stride, Tn)
    free(y)


cdef void _input_grad_tiles4(const floating* v, Py_ssize_t k_stride, floating* dx,
                             Py_ssize_t sample_stride, Py_ssize_t nc, Py_ssize_t H,
                             Py_ssize_t W, int pad, Py_ssize_t th,
                             Py_ssize_t tw) noexcept nogil:
    """Each of the nc planes = the sum over its tiles of B v B^T at each tile's input
    position."""
    # B along the rows of every tile's v (u: 6 rows i x 6 columns j of the nc T tiles), then
    # down the columns (e: 6 x 6); then each input row's tiles, overlapping by two columns
    # and adding up there, into a row of the tiles' width L = 4 tw + 2, added to the plane
    # where it lies inside it (tiles overlap by two rows as well).
    cdef Py_ssize_t L = 4 * tw + 2, T = th * tw, Tn = nc * T
    cdef floating* u = <floating*> malloc((72 * Tn + L) * sizeof(floating))
    cdef floating* e = u + 36 * Tn  # e[(6 a + j) Tn + t]
    cdef floating* row = e + 36 * Tn
    cdef floating* plane
    cdef floating* dst
    cdef Py_ssize_t n, ty, i, j, a, y, x, x_lo, x_hi
    x_lo = min(max(pad, 0), L)
    x_hi = max(min(W + pad, L), x_lo)
    for i in range(6):  # u[(6 i + j) Tn + t]
        _b6_rows(v + 6 * i * k_stride, k_stride, u + 6 * i * Tn, Tn, Tn)
    for j in range(6):
        _b6_rows(u + j * Tn, 6 * Tn, e + j * Tn, 6 * Tn, Tn)
    for n in range(nc):
        plane = dx + n * sample_stride
        memset(plane, 0, H * W * sizeof(floating))
        for ty in range(th):
            for a in range(6):
                y = 4 * ty - pad + a
                if 0 <= y < H:
                    _add_columns(e + 6 * a * Tn + n * T + ty * tw, Tn, row, tw)
                    dst = plane + y * W
                    for x in range(x_lo, x_hi):
                        dst[x - pad] += row[x]
    free(u)


def winograd_filter_transform(const floating[:, :, :, ::1] w, floating[:, :, ::1] U,
                              int threads=0):
    """U[4 i + j, f, c] = (G g G^T)[i, j] of every 3x3 filter g = w[f, c]: U (16, F, C)."""
    cdef Py_ssize_t F = w.shape[0], C = w.shape[1]
    cdef Py_ssize_t f
    _require(w.shape[2] == 3 and w.shape[3] == 3 and U.shape[0] == 16
             and U.shape[1] == F and U.shape[2] == C, "w (F, C, 3, 3) and U (16, F, C)")
    with nogil:
        for f in prange(F, schedule="static", num_threads=_threads(threads)):
            _filter_tiles(&w[f, 0, 0, 0], C, &U[0, f, 0], F * C)


def winograd_filter_grad_transform(const floating[:, :, ::1] dU, floating[:, :, :, ::1] dw,
                                   int threads=0):
    """dw[f, c] (3x3) = G^T d G, where d (4x4) is dU[:, f, c]: dU (16, F, C) -> dw (F, C,
    3, 3), the adjoint of winograd_filter_transform."""
    cdef Py_ssize_t F = dw.shape[0], C = dw.shape[1]
    cdef Py_ssize_t f
    _require(dw.shape[2] == 3 and dw.shape[3] == 3 and dU.shape[0] == 16
             and dU.shape[1] == F and dU.shape[2] == C, "dU (16, F, C) and dw (F, C, 3, 3)")
    with nogil:
        for f in prange(F, schedule="static", num_threads=_threads(threads)):
            _filter_grad_tiles(&dU[0, f, 0], C, F * C, &dw[f, 0, 0, 0])


def winograd_input_transform(const floating[:, :, :, ::1] x, floating[:, :, :] V,
                             Py_ssize_t n0, int pad, Py_ssize_t th, Py_ssize_t tw,
                             int threads=0):
    """V (16 or 36, C, nc th tw) = B^T d B of every input tile of samples n0 .. n0 + nc,
    for F(2x2, 3x3) or F(4x4, 3x3) by V's planes. V's tiles must be contiguous within each
    plane, or its channels: the transpose of a (planes, nc th tw, C) array, the layout
    that makes the backward's dM V^T a GEMM without a transposed operand. F(2x2, 3x3)
    also takes any other strided view."""
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t T = th * tw
    cdef Py_ssize_t nc = V.shape[2] // T if T > 0 else 0
    cdef Py_ssize_t k_stride = V.strides[0] // sizeof(floating)
    cdef Py_ssize_t t_stride = V.strides[2] // sizeof(floating)
    cdef Py_ssize_t blocks = (C + _CHANNEL_BLOCK - 1) // _CHANNEL_BLOCK
    cdef Py_ssize_t task, n, c
    cdef int m = _require_tiles(x.shape[0], C, H + 2 * pad - 2, W + 2 * pad - 2, V.shape[0],
                                V.shape[1], V.shape[2], n0, th, tw)
    if V.strides[1] == sizeof(floating) and t_stride != 1:
        with nogil:  # V^T's layout: a task per (sample, block of channels)
            for task in prange(nc * blocks, schedule="static", num_threads=_threads(threads)):
                n = task // blocks
                c = (task % blocks) * _CHANNEL_BLOCK
                _input_tiles_across_channels(&x[n0 + n, c, 0, 0], H * W,
                                             min(_CHANNEL_BLOCK, C - c), H, W, pad, th, tw,
                                             m, &V[0, c, n * T], k_stride, t_stride)
        return
    if m == 4:
        _require(t_stride == 1 or V.shape[2] <= 1,
                 "V's tiles or its channels contiguous (F(4x4, 3x3))")
        with nogil:  # a task per channel, over the chunk's samples
            for c in prange(C if nc > 0 else 0, schedule="static",
                            num_threads=_threads(threads)):
                _input_tiles4(&x[n0, c, 0, 0], C * H * W, nc, H, W, pad, th, tw, &V[0, c, 0],
                              k_stride)
        return
    with nogil:
        for task in prange(nc * C, schedule="static", num_threads=_threads(threads)):
            n = task // C
            c = task % C
            _input_tiles(&x[n0 + n, c, 0, 0], H, W, pad, th, tw, &V[0, c, n * T], k_stride,
                         t_stride)


def winograd_output_transform(const floating[:, :, :] M, const floating[::1] bias,
                              floating[:, :, :, ::1] out, Py_ssize_t n0, Py_ssize_t th,
                              Py_ssize_t tw, int threads=0):
    """out[n0 .. n0 + nc] = A^T m A + bias for every tile's 16 (F(2x2, 3x3)) or 36
    (F(4x4, 3x3)) products m in M."""
    cdef Py_ssize_t F = out.shape[1], Ho = out.shape[2], Wo = out.shape[3]
    cdef Py_ssize_t T = th * tw
    cdef Py_ssize_t nc = M.shape[2] // T if T > 0 else 0
    cdef Py_ssize_t k_stride = M.strides[0] // sizeof(floating)
    cdef Py_ssize_t task, n, f
    cdef int m = _require_tiles(out.shape[0], F, Ho, Wo, M.shape[0], M.shape[1], M.shape[2],
                                n0, th, tw)
    _require(bias.shape[0] == F, "bias (F,)")
    _require(M.shape[2] <= 1 or M.strides[2] == sizeof(floating), "M's tiles contiguous")
    if m == 4:
        with nogil:  # a task per filter, over the chunk's samples
            for f in prange(F if nc > 0 else 0, schedule="static",
                            num_threads=_threads(threads)):
                _output_tiles4(&M[0, f, 0], k_stride, bias[f], &out[n0, f, 0, 0],
                               F * Ho * Wo, nc, Ho, Wo, th, tw)
        return
    with nogil:
        for task in prange(nc * F, schedule="static", num_threads=_threads(threads)):
            n = task // F
            f = task % F
            _output_tiles(&M[0, f, n * T], k_stride, bias[f], &out[n0 + n, f, 0, 0], Ho, Wo,
                          th, tw)


def winograd_output_grad_transform(const floating[:, :, :, ::1] dout, floating[:, :, :] dM,
                                   double[:, ::1] bias_grad, Py_ssize_t n0, Py_ssize_t th,
                                   Py_ssize_t tw, int threads=0):
    """dM (16 or 36, F, nc th tw) = A dy A^T of every 2x2 or 4x4 tile dy of dout[n0 ..
    n0 + nc] (zero past the edge); bias_grad[n, f] = the sum of dout[n0 + n, f]."""
    cdef Py_ssize_t F = dout.shape[1], Ho = dout.shape[2], Wo = dout.shape[3]
    cdef Py_ssize_t T = th * tw
    cdef Py_ssize_t nc = dM.shape[2] // T if T > 0 else 0
    cdef Py_ssize_t k_stride = dM.strides[0] // sizeof(floating)
    cdef Py_ssize_t task, n, f
    cdef int m = _require_tiles(dout.shape[0], F, Ho, Wo, dM.shape[0], dM.shape[1],
                                dM.shape[2], n0, th, tw)
    _require(bias_grad.shape[0] >= nc and bias_grad.shape[1] == F, "bias_grad (nc, F)")
    _require(dM.shape[2] <= 1 or dM.strides[2] == sizeof(floating), "dM's tiles contiguous")
    if m == 4:
        with nogil:  # a task per filter, over the chunk's samples
            for f in prange(F if nc > 0 else 0, schedule="static",
                            num_threads=_threads(threads)):
                _output_grad_tiles4(&dout[n0, f, 0, 0], F * Ho * Wo, nc, Ho, Wo, th, tw,
                                    &dM[0, f, 0], k_stride, &bias_grad[0, f], F)
        return
    with nogil:
        for task in prange(nc * F, schedule="static", num_threads=_threads(threads)):
            n = task // F
            f = task % F
            bias_grad[n, f] = _output_grad_tiles(&dout[n0 + n, f, 0, 0], Ho, Wo, th, tw,
                                                 &dM[0, f, n * T], k_stride)


def winograd_input_grad_transform(const floating[:, :, :] dV, floating[:, :, :, ::1] dx,
                                  Py_ssize_t n0, int pad, Py_ssize_t th, Py_ssize_t tw,
                                  int threads=0):
    """dx[n0 .. n0 + nc] = the sum over tiles of B dv B^T placed at each tile's input
    position (overwrites dx; values in the padding are dropped), dV's 16 or 36 planes
    telling F(2x2, 3x3) from F(4x4, 3x3)."""
    cdef Py_ssize_t C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t T = th * tw
    cdef Py_ssize_t nc = dV.shape[2] // T if T > 0 else 0
    cdef Py_ssize_t k_stride = dV.strides[0] // sizeof(floating)
    cdef Py_ssize_t task, n, c
    cdef int m = _require_tiles(dx.shape[0], C, H + 2 * pad - 2, W + 2 * pad - 2,
                                dV.shape[0], dV.shape[1], dV.shape[2], n0, th, tw)
    _require(dV.shape[2] <= 1 or dV.strides[2] == sizeof(floating), "dV's tiles contiguous")
    # Each task owns its planes, so overlapping tiles need no atomics.
    if m == 4:
        with nogil:  # a task per channel, over the chunk's samples
            for c in prange(C if nc > 0 else 0, schedule="static",
                            num_threads=_threads(threads)):
                _input_grad_tiles4(&dV[0, c, 0], k_stride, &dx[n0, c, 0, 0], C * H * W, nc, H,
                                   W, pad, th, tw)
        return
    with nogil:
        for task in prange(nc * C, schedule="static", num_threads=_threads(threads)):
            n = task // C
            c = task % C
            _input_grad_tiles(&dV[0, c, n * T], k_stride, &dx[n0 + n, c, 0, 0], H, W, pad, th,
                              tw)


# ================================================================= optimizer updates
# One pass over a parameter for each update rule of convlab.optim (whose NumPy expressions
# make 5-12 passes with a temporary each): the next weights and state (velocity, cache,
# moments) are written to the out_* arrays, which may be the inputs themselves. Every array
# is one flat run of the parameter's values; the scalar settings arrive in double and are
# rounded once to the arrays' precision, and each expression is evaluated in the order of
# optim's, as NumPy evaluates it on float32 arrays with Python floats.


cdef inline floating _root(floating x) noexcept nogil:
    """sqrt in x's own precision (sqrtf for float32, which vectorises as sqrtps)."""
    if floating is float:
        return sqrtf(x)
    return sqrt(x)


# Elements per parallel task of the updates (a few arrays of them stay in L2): each task's
# loops store one array each, which gcc vectorises behind a run-time overlap check; it
# gives up on a loop that stores two or three of seven arrays that might overlap.
cdef enum:
    _UPDATE_BLOCK = 4096


cdef int _require_parameter(Py_ssize_t n, Py_ssize_t dw, Py_ssize_t state, Py_ssize_t out_w,
                            Py_ssize_t out_state) except -1:
    return _require(dw == n and state == n and out_w == n and out_state == n,
                    "w, dw, the state and the out arrays of one length")


cdef void _momentum_block(const floating* w, const floating* dw, const floating* velocity,
                          floating* out_w, floating* out_velocity, Py_ssize_t n,
                          floating lr, floating mu, bint nesterov) noexcept nogil:
    cdef floating mu1 = 1 + mu
    cdef Py_ssize_t i
    for i in range(n):
        out_velocity[i] = mu * velocity[i] - lr * dw[i]
    if nesterov:
        for i in range(n):
            out_w[i] = w[i] - mu * velocity[i] + mu1 * out_velocity[i]
    else:
        for i in range(n):
            out_w[i] = w[i] + out_velocity[i]


def momentum_update(const floating[::1] w, const floating[::1] dw,
                    const floating[::1] velocity, floating[::1] out_w,
                    floating[::1] out_velocity, double learning_rate, double momentum,
                    bint nesterov=False, int threads=0):
    """out_velocity = momentum velocity - learning_rate dw; out_w = w + out_velocity, or
    with nesterov, out_w = w - momentum velocity + (1 + momentum) out_velocity."""
    cdef Py_ssize_t n = w.shape[0], block, i
    _require_parameter(n, dw.shape[0], velocity.shape[0], out_w.shape[0],
                       out_velocity.shape[0])
    with nogil:
        for block in prange((n + _UPDATE_BLOCK - 1) // _UPDATE_BLOCK, schedule="static",
                            num_threads=_threads(threads)):
            i = block * _UPDATE_BLOCK
            _momentum_block(&w[i], &dw[i], &velocity[i], &out_w[i], &out_velocity[i],
                            min(_UPDATE_BLOCK, n - i), <floating>learning_rate,
                            <floating>momentum, nesterov)


cdef void _scaled_block(const floating* w, const floating* dw, const floating* cache,
                        floating* out_w, floating* out_cache, Py_ssize_t n, floating lr,
                        floating decay, floating fresh, floating eps) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out_cache[i] = decay * cache[i] + fresh * (dw[i] * dw[i])
    for i in range(n):
        out_w[i] = w[i] - lr * dw[i] / (_root(out_cache[i]) + eps)


def scaled_update(const floating[::1] w, const floating[::1] dw, const floating[::1] cache,
                  floating[::1] out_w, floating[::1] out_cache, double learning_rate,
                  double decay_rate, double epsilon, int threads=0):
    """out_cache = decay_rate cache + (1 - decay_rate) dw^2 (RMSProp), or cache + dw^2
    with decay_rate = 1 (AdaGrad); out_w = w - learning_rate dw / (sqrt(out_cache) +
    epsilon)."""
    cdef Py_ssize_t n = w.shape[0], block, i
    cdef double fresh = 1 if decay_rate == 1 else 1 - decay_rate
    _require_parameter(n, dw.shape[0], cache.shape[0], out_w.shape[0], out_cache.shape[0])
    with nogil:
        for block in prange((n + _UPDATE_BLOCK - 1) // _UPDATE_BLOCK, schedule="static",
                            num_threads=_threads(threads)):
            i = block * _UPDATE_BLOCK
            _scaled_block(&w[i], &dw[i], &cache[i], &out_w[i], &out_cache[i],
                          min(_UPDATE_BLOCK, n - i), <floating>learning_rate,
                          <floating>decay_rate, <floating>fresh, <floating>epsilon)


cdef void _adam_block(const floating* w, const floating* dw, const floating* m,
                      const floating* v, floating* out_w, floating* out_m, floating* out_v,
                      Py_ssize_t n, floating lr, floating b1, floating b2, floating fresh1,
                      floating fresh2, floating m_correction, floating v_correction,
                      floating eps) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out_m[i] = b1 * m[i] + fresh1 * dw[i]
    for i in range(n):
        out_v[i] = b2 * v[i] + fresh2 * (dw[i] * dw[i])
    for i in range(n):
        out_w[i] = w[i] - lr * (out_m[i] / m_correction) / (_root(out_v[i] / v_correction)
                                                            + eps)


def adam_update(const floating[::1] w, const floating[::1] dw, const floating[::1] m,
                const floating[::1] v, floating[::1] out_w, floating[::1] out_m,
                floating[::1] out_v, double learning_rate, double beta1, double beta2,
                double epsilon, long t, int threads=0):
    """Step t (>= 1) of Adam: out_m = beta1 m + (1 - beta1) dw; out_v = beta2 v + (1 -
    beta2) dw^2; out_w = w - learning_rate m_hat / (sqrt(v_hat) + epsilon), with the
    bias-corrected m_hat = out_m / (1 - beta1^t) and v_hat = out_v / (1 - beta2^t)."""
    cdef Py_ssize_t n = w.shape[0], block, i
    cdef double m_correction = 1 - beta1 ** t, v_correction = 1 - beta2 ** t
    _require_parameter(n, dw.shape[0], m.shape[0], out_w.shape[0], out_m.shape[0])
    _require(v.shape[0] == n and out_v.shape[0] == n and t >= 1,
             "v and out_v of w's length and t >= 1")
    with nogil:
        for block in prange((n + _UPDATE_BLOCK - 1) // _UPDATE_BLOCK, schedule="static",
                            num_threads=_threads(threads)):
            i = block * _UPDATE_BLOCK
            _adam_block(&w[i], &dw[i], &m[i], &v[i], &out_w[i], &out_m[i], &out_v[i],
                        min(_UPDATE_BLOCK, n - i), <floating>learning_rate, <floating>beta1,
                        <floating>beta2, <floating>(1 - beta1), <floating>(1 - beta2),
                        <floating>m_correction, <floating>v_correction, <floating>epsilon)
