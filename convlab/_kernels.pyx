# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled loops behind convlab.fast_layers: typed memoryviews, nogil, OpenMP prange.

Only loops NumPy cannot express live here; validation, chunking and scratch buffers are
Python in convlab/fast_layers.py, and the thread policy is decided in convlab/_threads.py
(which sets how many threads the parallel loops use through set_num_threads).

Column layouts (rows (c * fh + i) * fw + j in both):

* the **cs231n layout** of im2col_cs231n / col2im_cs231n: column ``(h' * W' + w') * N + n``;
* the **sample-major layout** of every fast path: column ``(n * H' + h') * W' + w'``. Each
  (row, sample) pair is one contiguous run of ``H' W'`` values, so im2col and col2im are
  strided row copies and the GEMM output ``(F, N H' W')`` needs only an (n, f) block
  transpose to become ``(N, F, H', W')``.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.string cimport memcpy, memset

cdef extern from *:
    """
    #ifdef _OPENMP
    #define CONVLAB_OPENMP 1
    #else
    #define CONVLAB_OPENMP 0
    #endif
    """
    int CONVLAB_OPENMP

# Threads of every parallel loop below; 1 until convlab._threads decides.
cdef int _num_threads = 1


def openmp_enabled():
    """True when this module was compiled with OpenMP (else prange runs serially)."""
    return bool(CONVLAB_OPENMP)


def set_num_threads(int threads):
    """Set how many OpenMP threads the parallel loops use (ignored without OpenMP)."""
    global _num_threads
    _num_threads = max(1, threads)


def get_num_threads():
    return _num_threads


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
                    int fh, int fw, int pad, int stride, Py_ssize_t Ho, Py_ssize_t Wo):
    """Columns of samples n0 .. n0 + nc of x into cols (C fh fw, nc H' W'), sample-major."""
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t P = Ho * Wo
    cdef Py_ssize_t nc = cols.shape[1] // P
    cdef Py_ssize_t task, row, n, c, i, j
    with nogil:
        # One task per (row, sample): a contiguous run of P outputs, enough tasks to balance.
        for task in prange(C * fh * fw * nc, schedule="static", num_threads=_num_threads):
            row = task // nc
            n = task % nc
            c = row // (fh * fw)
            i = (row // fw) % fh
            j = row % fw
            _gather_plane(&x[n0 + n, c, 0, 0], &cols[row, n * P], H, W, Ho, Wo, i, j, pad,
                          stride)


def col2im_samples(const floating[:, ::1] cols, floating[:, :, :, ::1] dx, Py_ssize_t n0,
                    int fh, int fw, int pad, int stride, Py_ssize_t Ho, Py_ssize_t Wo):
    """dx[n0 .. n0 + nc] = adjoint of im2col_samples applied to cols (overwrites dx)."""
    cdef Py_ssize_t C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t P = Ho * Wo
    cdef Py_ssize_t nc = cols.shape[1] // P
    cdef Py_ssize_t task, n, c, i, j
    cdef floating* plane
    with nogil:
        # Each task owns one (sample, channel) plane, so the accumulation needs no atomics.
        for task in prange(nc * C, schedule="static", num_threads=_num_threads):
            n = task // C
            c = task % C
            plane = &dx[n0 + n, c, 0, 0]
            memset(plane, 0, H * W * sizeof(floating))
            for i in range(fh):
                for j in range(fw):
                    _scatter_add_plane(&cols[(c * fh + i) * fw + j, n * P], plane, H, W, Ho,
                                       Wo, i, j, pad, stride)


def rows_to_samples(const floating[:, ::1] rows, const floating[::1] bias,
                     floating[:, :, ::1] out):
    """out[n, f, p] = rows[f, n P + p] + bias[f]; rows (F, nc P) -> out (nc, F, P)."""
    cdef Py_ssize_t nc = out.shape[0], F = out.shape[1], P = out.shape[2]
    cdef Py_ssize_t task, n, f, p
    cdef floating shift
    cdef const floating* src
    cdef floating* dst
    with nogil:
        for task in prange(nc * F, schedule="static", num_threads=_num_threads):
            n = task // F
            f = task % F
            shift = bias[f]
            src = &rows[f, n * P]
            dst = &out[n, f, 0]
            for p in range(P):
                dst[p] = src[p] + shift


def samples_to_rows(const floating[:, :, ::1] dout, floating[:, ::1] rows,
                     double[::1] bias_grad):
    """rows[f, n P + p] = dout[n, f, p] and bias_grad[f] += sum of dout[:, f, :]."""
    cdef Py_ssize_t nc = dout.shape[0], F = dout.shape[1], P = dout.shape[2]
    cdef Py_ssize_t n, f
    cdef double total
    with nogil:
        for f in prange(F, schedule="static", num_threads=_num_threads):
            total = 0
            for n in range(nc):
                memcpy(&rows[f, n * P], &dout[n, f, 0], P * sizeof(floating))
                total = total + _sum(&dout[n, f, 0], P)
            bias_grad[f] += total


# ====================================================================== cs231n kernels


def im2col_cs231n(const floating[:, :, :, ::1] x, floating[:, ::1] cols, int fh, int fw,
                   int pad, int stride, Py_ssize_t Ho, Py_ssize_t Wo):
    """cols (C fh fw, H' W' N) in the cs231n layout; parallel over rows."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t row, c, i, j, yo, xo, h, w, n, col
    with nogil:
        for row in prange(C * fh * fw, schedule="static", num_threads=_num_threads):
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
        for c in prange(C, schedule="static", num_threads=_num_threads):
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


def max_pool_planes(const floating[:, :, ::1] x, floating[:, :, ::1] out,
                     int[:, :, ::1] argmax, int ph, int pw, int stride):
    """out = window maxima of each (H, W) plane; argmax = flat index h W + w of the first max.

    As np.argmax in the naive layer: the first maximum wins (strict '>'), and the first NaN
    beats any number. The scan only compares with '>' and sums the window (a NaN anywhere
    makes the sum NaN), so the hot loop has no NaN test (one in the comparison made it 4x
    slower); a window whose sum is NaN is scanned again for its first NaN (inf - inf is
    NaN too: then none is found and the maximum stands)."""
    cdef Py_ssize_t planes = x.shape[0], W = x.shape[2]
    cdef Py_ssize_t Ho = out.shape[1], Wo = out.shape[2]
    cdef Py_ssize_t t, yo, xo, i, j, h0, w0, best_at
    cdef floating best, v, total
    cdef Py_ssize_t nan_at
    with nogil:
        for t in prange(planes, schedule="static", num_threads=_num_threads):
            for yo in range(Ho):
                h0 = yo * stride
                for xo in range(Wo):
                    w0 = xo * stride
                    best = x[t, h0, w0]
                    best_at = h0 * W + w0
                    total = 0
                    for i in range(ph):
                        for j in range(pw):
                            v = x[t, h0 + i, w0 + j]
                            total = total + v
                            if v > best:
                                best = v
                                best_at = (h0 + i) * W + w0 + j
                    if total != total:
                        nan_at = _first_nan(x[t], h0, w0, ph, pw)
                        if nan_at >= 0:
                            best_at = nan_at
                            best = x[t, nan_at // W, nan_at % W]
                    out[t, yo, xo] = best
                    argmax[t, yo, xo] = <int>best_at


def max_unpool_planes(const floating[:, ::1] dout, const int[:, ::1] argmax,
                       floating[:, ::1] dx):
    """dx (planes, H W) = 0, then dx[t, argmax[t, k]] += dout[t, k] (overlaps accumulate)."""
    cdef Py_ssize_t planes = dx.shape[0], HW = dx.shape[1], K = dout.shape[1]
    cdef Py_ssize_t t, k
    with nogil:
        for t in prange(planes, schedule="static", num_threads=_num_threads):
            memset(&dx[t, 0], 0, HW * sizeof(floating))
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
        for t in prange(planes, schedule="static", num_threads=_num_threads):
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
        for t in prange(planes, schedule="static", num_threads=_num_threads):
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
        for t in prange(planes, schedule="static", num_threads=_num_threads):
            out[t] = <floating>(_sum(&x[t, 0], HW) / HW)


def spread_means(const floating[::1] dout, floating[:, ::1] dx):
    """dx[t, :] = dout[t] / (H W), the adjoint of plane_means."""
    cdef Py_ssize_t planes = dx.shape[0], HW = dx.shape[1]
    cdef Py_ssize_t t, k
    cdef floating share
    with nogil:
        for t in prange(planes, schedule="static", num_threads=_num_threads):
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


cdef inline void _normalize_plane(const floating* x, floating* xhat, floating* out,
                                  unsigned char* mask, Py_ssize_t size, floating mean,
                                  floating scale, floating gamma, floating beta,
                                  bint relu) noexcept nogil:
    """xhat = (x - mean) scale, out = gamma xhat + beta; when relu, out is clamped at 0
    and mask records where it was kept (1) or zeroed (0)."""
    cdef Py_ssize_t k
    cdef floating xh, o
    if relu:
        for k in range(size):
            xh = (x[k] - mean) * scale
            xhat[k] = xh
            o = gamma * xh + beta
            mask[k] = o > 0
            out[k] = o if o > 0 else 0
    else:
        for k in range(size):
            xh = (x[k] - mean) * scale
            xhat[k] = xh
            out[k] = gamma * xh + beta


cdef void _batchnorm_channel_forward(const floating[:, :, ::1] x, Py_ssize_t c, double eps,
                                     floating gamma, floating beta, bint relu,
                                     floating[:, :, ::1] xhat, floating[:, :, ::1] out,
                                     unsigned char[:, :, ::1] mask, double* mean,
                                     double* var, double* inv_std) noexcept nogil:
    """One channel of batchnorm_train_forward: its statistics over (N, S), then xhat and out.
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
        _normalize_plane(&x[n, c, 0], &xhat[n, c, 0], &out[n, c, 0],
                         &mask[n, c, 0] if relu else NULL, S, <floating>m,
                         <floating>inv_std[0], gamma, beta, relu)


def batchnorm_train_forward(const floating[:, :, ::1] x, const floating[::1] gamma,
                            const floating[::1] beta, double eps, bint relu,
                            floating[:, :, ::1] xhat, floating[:, :, ::1] out,
                            unsigned char[:, :, ::1] mask, double[::1] mean, double[::1] var,
                            double[::1] inv_std):
    """Spatial batchnorm in train mode over x viewed as (N, C, S), S = H W: per channel the
    batch mean and variance over (N, S), xhat = (x - mean) inv_std with inv_std =
    1 / sqrt(var + eps), out = gamma xhat + beta, then max(out, 0) when relu. Writes xhat,
    out, the relu's 0/1 mask (N, C, S) when relu (without relu mask is not read, and may be
    any 3-d uint8 array), and mean, var, inv_std (C,). Parallel over channels."""
    cdef Py_ssize_t C = x.shape[1]
    cdef Py_ssize_t c
    with nogil:
        for c in prange(C, schedule="static", num_threads=_num_threads):
            _batchnorm_channel_forward(x, c, eps, gamma[c], beta[c], relu, xhat, out, mask,
                                       &mean[c], &var[c], &inv_std[c])


cdef inline void _apply_mask(const floating* dout, const unsigned char* mask,
                             floating* masked, Py_ssize_t size) noexcept nogil:
    """masked = dout * mask (mask 0 or 1): arithmetic, where a comparison recomputed from
    xhat became a branch that mispredicted on every other value."""
    cdef Py_ssize_t k
    for k in range(size):
        masked[k] = dout[k] * mask[k]


cdef inline double _dot(const floating* a, const floating* b, Py_ssize_t size) noexcept nogil:
    """Sum of a * b in double over four independent accumulators."""
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef Py_ssize_t k = 0
    while k + 4 <= size:
        s0 += a[k] * b[k]
        s1 += a[k + 1] * b[k + 1]
        s2 += a[k + 2] * b[k + 2]
        s3 += a[k + 3] * b[k + 3]
        k += 4
    while k < size:
        s0 += a[k] * b[k]
        k += 1
    return (s0 + s1) + (s2 + s3)


cdef inline void _input_gradient(const floating* d, const floating* xhat, floating* dx,
                                 Py_ssize_t size, floating scale, floating mean_d,
                                 floating mean_dxhat) noexcept nogil:
    """dx = scale (d - mean_d - xhat mean_dxhat); d may be dx itself."""
    cdef Py_ssize_t k
    for k in range(size):
        dx[k] = scale * (d[k] - mean_d - xhat[k] * mean_dxhat)


cdef void _batchnorm_channel_backward(const floating[:, :, ::1] dout,
                                      const floating[:, :, ::1] xhat,
                                      const unsigned char[:, :, ::1] mask, Py_ssize_t c,
                                      floating gamma, double inv_std, bint relu,
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
        sum_dxhat = sum_dxhat + _dot(d, &xhat[n, c, 0], S)
    dbeta[0] = sum_d
    dgamma[0] = sum_dxhat
    # dx = gamma inv_std / M (M d - sum d - xhat sum d xhat): the closed form of
    # batchnorm_backward_alt.
    for n in range(N):
        d = &dx[n, c, 0] if relu else &dout[n, c, 0]
        _input_gradient(d, &xhat[n, c, 0], &dx[n, c, 0], S, <floating>(gamma * inv_std),
                        <floating>(sum_d / M), <floating>(sum_dxhat / M))


def batchnorm_train_backward(const floating[:, :, ::1] dout, const floating[:, :, ::1] xhat,
                             const unsigned char[:, :, ::1] mask, const floating[::1] gamma,
                             const double[::1] inv_std, bint relu, floating[:, :, ::1] dx,
                             double[::1] dgamma, double[::1] dbeta):
    """Backward of batchnorm_train_forward (through its relu, by mask, when relu): dx
    (N, C, S), dgamma and dbeta (C,) in double. Parallel over channels."""
    cdef Py_ssize_t C = dout.shape[1]
    cdef Py_ssize_t c
    with nogil:
        for c in prange(C, schedule="static", num_threads=_num_threads):
            _batchnorm_channel_backward(dout, xhat, mask, c, gamma[c], inv_std[c], relu, dx,
                                        &dgamma[c], &dbeta[c])
