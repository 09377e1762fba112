"""Input validation shared by the layers: bad input gets a clear error, never a wrong answer."""

import numpy as np


def check_float_array(x, name, ndim=None):
    """Raise TypeError unless x is a floating-point ndarray (of ``ndim`` dims when given)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {x.shape}")


def check_same_dtype(x, **arrays):
    """Raise TypeError if any of ``arrays`` (None allowed) has a dtype other than x's."""
    for name, a in arrays.items():
        if a is None:
            continue
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a NumPy array, got {type(a).__name__}")
        if a.dtype != x.dtype:
            raise TypeError(
                f"{name} has dtype {a.dtype} but x has {x.dtype}; cast them to one dtype"
            )


def check_labels(y, N, C):
    """y must be N integer labels in [0, C)."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"labels y must be integers, got dtype {y.dtype}")
    if y.shape != (N,):
        raise ValueError(f"labels y must have shape ({N},) to match the scores, got {y.shape}")
    if N and (y.min() < 0 or y.max() >= C):
        raise ValueError(f"labels y must lie in [0, {C}), got values in [{y.min()}, {y.max()}]")


def _check_positive_int(value, name, minimum):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def conv_output_size(H, W, HH, WW, stride, pad):
    """(H', W') of a convolution; ValueError when the filter does not fit the padded input."""
    _check_positive_int(stride, "conv_param['stride']", 1)
    _check_positive_int(pad, "conv_param['pad']", 0)
    if HH > H + 2 * pad or WW > W + 2 * pad:
        raise ValueError(f"a {HH}x{WW} filter does not fit a {H}x{W} input padded by {pad}")
    return 1 + (H + 2 * pad - HH) // stride, 1 + (W + 2 * pad - WW) // stride


def pool_output_size(H, W, pool_height, pool_width, stride):
    """(H', W') of a pooling layer; ValueError when the window does not fit the input."""
    _check_positive_int(pool_height, "pool_param['pool_height']", 1)
    _check_positive_int(pool_width, "pool_param['pool_width']", 1)
    _check_positive_int(stride, "pool_param['stride']", 1)
    if pool_height > H or pool_width > W:
        raise ValueError(f"a {pool_height}x{pool_width} pool window does not fit a {H}x{W} input")
    return 1 + (H - pool_height) // stride, 1 + (W - pool_width) // stride


def check_conv_operands(x, w, b, conv_param):
    """Validate a convolution's x (N, C, H, W), w (F, C, HH, WW), b (F,) or None and
    conv_param; return (stride, pad, H', W')."""
    check_float_array(x, "x", ndim=4)
    check_float_array(w, "w", ndim=4)
    check_same_dtype(x, w=w, b=b)
    _, C, H, W = x.shape
    F, Cw, HH, WW = w.shape
    if Cw != C:
        raise ValueError(f"w has {Cw} input channels but x has {C}")
    if b is not None and b.shape != (F,):
        raise ValueError(f"b must have shape ({F},), got {b.shape}")
    stride, pad = conv_param["stride"], conv_param["pad"]
    return (stride, pad, *conv_output_size(H, W, HH, WW, stride, pad))


def check_pool_input(x, pool_param):
    """Validate a pooling layer's x (N, C, H, W) and pool_param; return
    (pool_height, pool_width, stride, H', W')."""
    check_float_array(x, "x", ndim=4)
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    return (ph, pw, stride, *pool_output_size(x.shape[2], x.shape[3], ph, pw, stride))


def check_count(name, value, allow_zero=True):
    """Return ``value`` as an int, raising TypeError/ValueError unless it is a valid count."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_numeric_dtype(dtype):
    """np.dtype(dtype), TypeError unless it is a float or integer dtype."""
    dt = np.dtype(dtype)
    if dt.kind not in "fiu":
        raise TypeError(f"dtype must be a numeric (float/int) dtype, got {dt}")
    return dt


def check_float_dtype(dtype):
    """np.dtype(dtype), TypeError unless it is a floating-point dtype."""
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"dtype must be a floating-point dtype, got {dt}")
    return dt
