"""im2col by fancy indexing, in plain NumPy (the course's ``cs231n/im2col.py``).

The same column layout as ``convlab.fast_layers.im2col_cython``: row (c fh + i) fw + j and
column (h' W' + w') N + n hold x[n, c, h' stride + i - padding, w' stride + j - padding].
"""

import numpy as np

from convlab._checks import as_float_array, conv_output_size

__all__ = ["col2im_indices", "get_im2col_indices", "im2col_indices"]


def get_im2col_indices(x_shape, field_height, field_width, padding=1, stride=1):
    """Index arrays (k, i, j) into the zero-padded input: x_padded[:, k, i, j] is
    (N, C fh fw, H' W'), each column one receptive field. k: (C fh fw, 1) channels,
    i, j: (C fh fw, H' W') rows and columns."""
    N, C, H, W = x_shape
    out_height, out_width = conv_output_size(H, W, field_height, field_width, stride, padding)
    # Offsets inside a field, repeated per channel; plus where each field starts.
    i0 = np.tile(np.repeat(np.arange(field_height), field_width), C)   # (C fh fw,)
    i1 = stride * np.repeat(np.arange(out_height), out_width)          # (H' W',)
    j0 = np.tile(np.arange(field_width), field_height * C)
    j1 = stride * np.tile(np.arange(out_width), out_height)
    i = i0[:, None] + i1[None, :]
    j = j0[:, None] + j1[None, :]
    k = np.repeat(np.arange(C), field_height * field_width)[:, None]
    return k, i, j


def im2col_indices(x, field_height, field_width, padding=1, stride=1):
    """Columns (C fh fw, H' W' N) of x (N, C, H, W), every receptive field one column."""
    x = as_float_array(x, "x", ndim=4)
    p = padding
    x_padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), mode="constant")
    k, i, j = get_im2col_indices(x.shape, field_height, field_width, padding, stride)
    cols = x_padded[:, k, i, j]                                # (N, C fh fw, H' W')
    C = x.shape[1]
    return cols.transpose(1, 2, 0).reshape(field_height * field_width * C, -1)


def col2im_indices(cols, x_shape, field_height=3, field_width=3, padding=1, stride=1):
    """Adjoint of im2col_indices: sums every column entry back into its input position
    (overlapping fields add up). Returns an array of x_shape (N, C, H, W)."""
    cols = as_float_array(cols, "cols", ndim=2)
    N, C, H, W = x_shape
    k, i, j = get_im2col_indices(x_shape, field_height, field_width, padding, stride)
    if cols.shape != (C * field_height * field_width, i.shape[1] * N):
        raise ValueError(f"cols must be {(C * field_height * field_width, i.shape[1] * N)} "
                         f"for x_shape {tuple(x_shape)}, got {cols.shape}")
    x_padded = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    cols_reshaped = cols.reshape(C * field_height * field_width, -1, N).transpose(2, 0, 1)
    np.add.at(x_padded, (slice(None), k, i, j), cols_reshaped)  # += with repeated indices
    if padding == 0:
        return x_padded
    return x_padded[:, :, padding:-padding, padding:-padding]
