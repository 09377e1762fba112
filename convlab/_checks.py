"""Input validation shared by the layers: bad input gets a clear error, never a wrong answer."""


import numpy as np

from convlab.backend import device_of, get_array_module, is_host


def _compute_dtype(dtypes):
    """The floating dtype a layer computes in for operands of ``dtypes``, as NumPy promotes
    them: float32 with float32 stays float32, any float64 makes float64, and integer or bool
    operands compute in float64 (as cs231n's layers do, whose outputs are float arrays).
    float16 computes in float32, the narrowest dtype the kernels have."""
    dt = np.result_type(*dtypes)
    if dt.kind in "biu":
        return np.dtype(np.float64)
    if dt == np.float16:
        return np.dtype(np.float32)
    return dt


def float_operands(**arrays):
    """The named arrays (None passes through), cast to one floating dtype by NumPy's
    promotion rules (see _compute_dtype); TypeError for a non-array or a dtype that is not
    a real number of at most 64 bits. Returns them in the order given."""
    devices = {}
    for name, a in arrays.items():
        if a is None:
            continue
        if not isinstance(a, np.ndarray) and is_host(a):
            raise TypeError(f"{name} must be a NumPy array (or a CuPy one), got {type(a).__name__}")
        if a.dtype.kind not in "biuf" or a.dtype.itemsize > 8:
            raise TypeError(f"{name} must hold real numbers (float32, float64 or integers), "
                            f"got dtype {a.dtype}")
        devices.setdefault(device_of(a), name)
    if len(devices) > 1:
        placed = ", ".join(f"{name} on {device}" for device, name in devices.items())
        raise TypeError(f"operands must be on one device, got {placed}; move them with "
                        "convlab.backend.to_device (or model.to(device))")
    present = [a.dtype for a in arrays.values() if a is not None]
    dt = _compute_dtype(present)
    return tuple(None if a is None else a.astype(dt, copy=False) for a in arrays.values())


def as_float_array(x, name="x", ndim=None):
    """``x`` as a float32/float64 array (see float_operands), ValueError unless it has
    ``ndim`` dimensions when given."""
    (x,) = float_operands(**{name: x})
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {x.shape}")
    return x


def check_dout(dout, shape, dtype=None):
    """The upstream gradient of a layer whose output had ``shape``: ValueError for another
    shape; with ``dtype``, returned as a C-contiguous array of it (what kernels need)."""
    xp = get_array_module(dout)
    dout = xp.asarray(dout)
    if dout.shape != tuple(shape):
        raise ValueError(f"dout must have shape {tuple(shape)} (the forward output), "
                         f"got {dout.shape}")
    return dout if dtype is None else xp.ascontiguousarray(dout, dtype=dtype)


def check_labels(y, N=None, C=None, name="labels y"):
    """``y`` as an int64 array of N class labels in [0, C): TypeError unless integers,
    ValueError for another shape or a label out of range (N and C checked when given)."""
    y = get_array_module(y).asarray(y)
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{name} must be integers, got dtype {y.dtype}")
    if y.ndim != 1 or (N is not None and y.shape[0] != N):
        expected = f"({N},) to match the scores" if N is not None else "(N,)"
        raise ValueError(f"{name} must have shape {expected}, got {y.shape}")
    if y.size and (y.min() < 0 or (C is not None and y.max() >= C)):
        upper = C if C is not None else "inf"
        raise ValueError(f"{name} must lie in [0, {upper}), got values in [{y.min()}, {y.max()}]")
    return y.astype(np.int64, copy=False)


def check_int(value, name, minimum=0):
    """``value`` as an int: TypeError unless it is an integer (Python or NumPy, not bool),
    ValueError if it is below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_keep_probability(p, name="dropout keep probability"):
    """A dropout keep probability must lie in (0, 1]: 1 keeps everything, 0 nothing."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not (
        0 < p <= 1
    ):
        raise ValueError(f"{name} must be in (0, 1], got {p!r}")
    return p


def conv_output_size(H, W, HH, WW, stride, pad):
    """(H', W') of a convolution; ValueError when the filter does not fit the padded input."""
    check_int(stride, "conv_param['stride']", 1)
    check_int(pad, "conv_param['pad']", 0)
    if HH > H + 2 * pad or WW > W + 2 * pad:
        raise ValueError(f"a {HH}x{WW} filter does not fit a {H}x{W} input padded by {pad}")
    return 1 + (H + 2 * pad - HH) // stride, 1 + (W + 2 * pad - WW) // stride


def pool_output_size(H, W, pool_height, pool_width, stride):
    """(H', W') of a pooling layer; ValueError when the window does not fit the input."""
    check_int(pool_height, "pool_param['pool_height']", 1)
    check_int(pool_width, "pool_param['pool_width']", 1)
    check_int(stride, "pool_param['stride']", 1)
    if pool_height > H or pool_width > W:
        raise ValueError(f"a {pool_height}x{pool_width} pool window does not fit a {H}x{W} input")
    return 1 + (H - pool_height) // stride, 1 + (W - pool_width) // stride


def check_affine_operands(x, w, b):
    """x (N, d1, ..., dk), w (D, M) with D = d1 ... dk, b (M,) as one float dtype
    (float_operands); ValueError for other shapes."""
    x, w, b = float_operands(x=x, w=w, b=b)
    D = int(np.prod(x.shape[1:]))
    if w.ndim != 2 or w.shape[0] != D:
        raise ValueError(f"w must have shape ({D}, M) for x of shape {x.shape}, got {w.shape}")
    if b.shape != (w.shape[1],):
        raise ValueError(f"b must have shape ({w.shape[1]},), got {b.shape}")
    return x, w, b


def check_conv_operands(x, w, b, conv_param):
    """Validate a convolution's x (N, C, H, W), w (F, C, HH, WW), b (F,) or None and
    conv_param; return x, w, b in their common float dtype and (stride, pad, H', W')."""
    x, w, b = float_operands(x=x, w=w, b=b)
    as_float_array(x, "x", ndim=4)
    as_float_array(w, "w", ndim=4)
    _, C, H, W = x.shape
    F, Cw, HH, WW = w.shape
    if Cw != C:
        raise ValueError(f"w has {Cw} input channels but x has {C}")
    if b is not None and b.shape != (F,):
        raise ValueError(f"b must have shape ({F},), got {b.shape}")
    stride, pad = conv_param["stride"], conv_param["pad"]
    return x, w, b, (stride, pad, *conv_output_size(H, W, HH, WW, stride, pad))


def check_pool_input(x, pool_param):
    """Validate a pooling layer's x (N, C, H, W) and pool_param; return x as a float array
    and (pool_height, pool_width, stride, H', W')."""
    x = as_float_array(x, "x", ndim=4)
    return x, pool_geometry(x.shape[2], x.shape[3], pool_param)


def pool_geometry(H, W, pool_param):
    """(pool_height, pool_width, stride, H', W') of pool_param over an H x W input."""
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    return ph, pw, stride, *pool_output_size(H, W, ph, pw, stride)


def check_count(name, value, allow_zero=True):
    """A count of things: an int >= 0 (>= 1 without allow_zero); see check_int."""
    return check_int(value, name, minimum=0 if allow_zero else 1)


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


def as_real_array(x, name):
    """``x`` as a NumPy array of real numbers (bool/int/float), else TypeError."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like, got {type(x).__name__}") from exc
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_
    ) or np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def check_images_nhwc(Xs, name="Xs"):
    Xs = as_real_array(Xs, name)
    if Xs.ndim != 4:
        raise ValueError(f"{name} must have shape (N, H, W, C), got shape {Xs.shape}")
    if 0 in Xs.shape:
        raise ValueError(f"{name} must not be empty, got shape {Xs.shape}")
    if not np.all(np.isfinite(Xs)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return Xs


def norm_operands(x, gamma, beta, shape):
    """x, gamma, beta in their common float dtype; ValueError unless gamma and beta have
    ``shape``."""
    x, gamma, beta = float_operands(x=x, gamma=gamma, beta=beta)
    if gamma.shape != shape or beta.shape != shape:
        raise ValueError(
            f"gamma and beta must have shape {shape} for x of shape {x.shape}, "
            f"got {gamma.shape} and {beta.shape}"
        )
    return x, gamma, beta


def check_nonempty_batch(x):
    """ValueError for an empty batch in 'train' mode (its mean would be NaN)."""
    if x.size == 0:
        # The mean of nothing is NaN, and it would be written into the running stats.
        raise ValueError(f"batchnorm in 'train' mode needs a non-empty batch, got x of "
                         f"shape {x.shape}")


def require_train_cache(cache):
    """ValueError when a batchnorm backward gets the (None) cache of a 'test' forward."""
    if cache is None:
        raise ValueError("backward needs the cache of a forward pass in 'train' mode")
