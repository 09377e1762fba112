"""From raw uint8 images to a network's input: per-class hold-out splits and per-channel
normalisation."""

import numpy as np

from convlab._checks import check_count, check_float_dtype


def split_per_class(X, y, num_val_per_class):
    """Hold out the last ``num_val_per_class`` examples of every class for validation.

    Inputs: ``X (N, ...)``, ``y (N,)`` integer labels, ``num_val_per_class`` int >= 0.
    "Last" follows the order of ``X``; both outputs keep that relative order.

    Returns ``X_train (N - K*V, ...)``, ``y_train``, ``X_val (K*V, ...)``, ``y_val`` for K
    classes and V = ``num_val_per_class`` (e.g. 45000 / 5000 for CIFAR-10 with V = 500).

    Raises ValueError if shapes disagree or a class has no more than V examples (it would leave
    no training example of that class).
    """
    X = np.asarray(X)
    y = np.asarray(y)
    v = check_count("num_val_per_class", num_val_per_class)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (N,), got shape {y.shape}")
    if y.size and y.dtype.kind not in "iu":
        raise TypeError(f"y must hold integer labels, got dtype {y.dtype}")
    if X.ndim < 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"X has {X.shape[0] if X.ndim else 0} examples but y has {y.shape[0]}")
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if v and np.any(counts <= v):
        bad = classes[counts <= v]
        raise ValueError(
            f"class(es) {bad.tolist()} have only {counts[counts <= v].tolist()} examples; "
            f"need more than num_val_per_class={v}"
        )
    order = np.argsort(inverse, kind="stable")
    rank = np.empty(y.shape[0], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank[order] = np.arange(y.shape[0]) - np.repeat(starts, counts)
    from_end = counts[inverse] - 1 - rank
    val = from_end < v
    return X[~val], y[~val], X[val], y[val]


def _channel_stats(X, chunk=4096):
    """Per-channel mean and std of ``X (N, H, W, C)`` scaled to [0, 1], in float64."""
    c = X.shape[-1]
    if X.dtype == np.uint8:  # exact and fast: per-channel histograms
        values = np.arange(256, dtype=np.float64)
        hist = np.stack([np.bincount(X[..., k].ravel(), minlength=256) for k in range(c)])
        count = hist.sum(axis=1)
        mean = hist @ values / count
        var = hist @ values**2 / count - mean**2
        return mean / 255.0, np.sqrt(np.maximum(var, 0.0)) / 255.0
    s = np.zeros(c)
    ss = np.zeros(c)
    for start in range(0, X.shape[0], chunk):
        xb = X[start:start + chunk].astype(np.float64)
        s += xb.sum(axis=(0, 1, 2))
        ss += np.square(xb).sum(axis=(0, 1, 2))
    count = X.shape[0] * X.shape[1] * X.shape[2]
    mean = s / count
    var = np.maximum(ss / count - mean**2, 0.0)
    return mean / 255.0, np.sqrt(var) / 255.0


def preprocess_images(X, mean=None, std=None, dtype=np.float32):
    """Normalise uint8 images for a network.

    Inputs:
    - X: ``(N, H, W, C)`` images with values in 0..255 (uint8, or any real dtype).
    - mean, std: per-channel ``(C,)`` statistics on the [0, 1] scale. When None they are
      computed from ``X`` (pass the training-set values when processing validation/test data).
      A zero std is replaced by 1.
    - dtype: floating-point dtype of the output (default float32).

    Returns ``(X_out (N, C, H, W) of dtype, mean (C,), std (C,))`` with
    ``X_out = (X / 255 - mean) / std`` per channel.
    """
    dt = check_float_dtype(dtype)
    X = np.asarray(X)
    if X.ndim != 4:
        raise ValueError(f"X must be (N, H, W, C) images, got shape {X.shape}")
    if X.dtype.kind not in "iuf":
        raise TypeError(f"X must have a numeric dtype, got {X.dtype}")
    N, H, W, C = X.shape
    if mean is None or std is None:
        if N == 0:
            raise ValueError("cannot compute mean/std of an empty array; pass mean and std")
        m, s = _channel_stats(X)
        mean = m if mean is None else mean
        std = s if std is None else std
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    std = np.asarray(std, dtype=np.float64).reshape(-1)
    if mean.shape != (C,) or std.shape != (C,):
        raise ValueError(
            f"mean and std must have shape ({C},) for {C}-channel images, "
            f"got {mean.shape} and {std.shape}"
        )
    std = np.where(std > 0, std, 1.0)
    scale = (1.0 / (255.0 * std)).astype(dt)
    shift = (mean / std).astype(dt)
    out = np.empty((N, C, H, W), dtype=dt)
    chunk = 4096
    for start in range(0, N, chunk):
        ob = out[start:start + chunk]
        ob[...] = X[start:start + chunk].transpose(0, 3, 1, 2)
        ob *= scale[:, None, None]
        ob -= shift[:, None, None]
    return out, mean.astype(dt), std.astype(dt)


def stratified_subset(y, n, seed=0):
    """Sorted indices of ``n`` of the examples labelled ``y (N,)``, drawn at random within
    each class so that every class keeps its share (largest remainders get the leftover
    places). Taking the first n instead would, on data stored class by class, keep only
    the first classes. n >= N returns every index."""
    y = np.asarray(y)
    n = check_count("n", n, allow_zero=False)
    if n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    share = counts * n / len(y)
    quota = np.floor(share).astype(np.int64)
    leftover = np.argsort(quota - share, kind="stable")[: n - quota.sum()]
    quota[leftover] += 1
    picks = [rng.choice(np.flatnonzero(y == c), q, replace=False)
             for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(picks))
