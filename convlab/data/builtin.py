"""The built-in offline dataset: procedurally drawn 32x32 RGB images of shapes and textures
in 10 classes, deterministic given a seed, so everything runs without a download."""

import numpy as np

from convlab._checks import check_count, check_float_dtype
from convlab.data.preprocess import preprocess_images

BUILTIN_CLASS_NAMES = (
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "horizontal_stripes",
    "vertical_stripes",
    "diagonal_stripes",
    "checkerboard",
    "dots",
)

_BUILTIN_SIZE = 32


def _builtin_masks(label, rng, n, yy, xx):
    """Boolean foreground masks ``(n, S, S)`` for ``n`` images of class ``label``."""
    S = _BUILTIN_SIZE
    if label <= 4:  # shapes at random positions and sizes
        r = rng.uniform(6.0, 11.0, n)[:, None, None]
        cx = rng.uniform(r[:, 0, 0], S - r[:, 0, 0])[:, None, None]
        cy = rng.uniform(r[:, 0, 0], S - r[:, 0, 0])[:, None, None]
        dx = xx - cx
        dy = yy - cy
        if label == 0:  # circle (filled disk)
            return dx**2 + dy**2 <= r**2
        if label == 1:  # square
            h = r * 0.85
            return (np.abs(dx) <= h) & (np.abs(dy) <= h)
        if label == 2:  # triangle, apex up or down
            flip = np.where(rng.random(n) < 0.5, 1.0, -1.0)[:, None, None]
            t = dy * flip
            return (np.abs(t) <= r) & (np.abs(dx) <= (t + r) * 0.55)
        if label == 3:  # plus-shaped cross
            w = np.maximum(r * 0.3, 1.6)
            return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
        # ring
        d2 = dx**2 + dy**2
        return (d2 <= r**2) & (d2 >= (r * 0.55) ** 2)

    # textures over the whole image with random period and phase
    period = rng.uniform(4.0, 9.0, n)[:, None, None]
    phase = rng.uniform(0.0, 2 * np.pi, n)[:, None, None]
    k = 2 * np.pi / period
    if label == 5:
        return np.sin(k * yy + phase) > 0
    if label == 6:
        return np.sin(k * xx + phase) > 0
    if label == 7:
        sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)[:, None, None]
        return np.sin(k * (xx + sign * yy) / np.sqrt(2.0) + phase) > 0
    if label == 8:
        phase2 = rng.uniform(0.0, 2 * np.pi, n)[:, None, None]
        return np.sin(k * xx + phase) * np.sin(k * yy + phase2) > 0
    # dots on a regular grid
    p = rng.uniform(6.0, 10.0, n)[:, None, None]
    ox = rng.uniform(0.0, p[:, 0, 0])[:, None, None]
    oy = rng.uniform(0.0, p[:, 0, 0])[:, None, None]
    fx = np.mod(xx + ox, p) - p / 2
    fy = np.mod(yy + oy, p) - p / 2
    return fx**2 + fy**2 <= (p * 0.3) ** 2


def make_builtin_images(n, seed=0):
    """Generate the raw images of the built-in offline dataset.

    ``n`` 32x32 RGB images of the 10 classes in :data:`BUILTIN_CLASS_NAMES` (five shapes at
    random positions and sizes, five full-image textures with random period and phase), each
    drawn in a random foreground colour on a random contrasting background with pixel noise and
    a random brightness gradient, so colour alone carries no class information. Labels are
    shuffled in aligned blocks of 10: ``y[10*k:10*k+10]`` holds every class once, so the
    classes are balanced (counts differ by at most one) in any split at a multiple of 10. The
    output depends only on ``n`` and
    ``seed`` (a ``np.random.default_rng`` seed; NumPy's global RNG is never used).

    Returns ``X (n, 32, 32, 3)`` uint8 and ``y (n,)`` int64.
    """
    n = check_count("n", n)
    rng = np.random.default_rng(seed)
    S = _BUILTIN_SIZE
    K = len(BUILTIN_CLASS_NAMES)
    # each aligned block of K labels is a random permutation of the classes, so any split at
    # a multiple of K (e.g. 5000 / 500 / 500) is exactly balanced
    blocks = -(-n // K)
    y = rng.permuted(np.tile(np.arange(K, dtype=np.int64), (blocks, 1)), axis=1).ravel()[:n]
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float64) + 0.5

    mask = np.zeros((n, S, S), dtype=bool)
    for label in range(K):
        idx = np.flatnonzero(y == label)
        if idx.size:
            mask[idx] = _builtin_masks(label, rng, idx.size, yy, xx)

    bg = rng.uniform(0.0, 255.0, (n, 3))
    # foreground differs from the background by 64..192 in every channel (mod 256)
    fg = np.mod(bg + 128.0 + rng.uniform(-64.0, 64.0, (n, 3)), 256.0)
    img = np.where(mask[..., None], fg[:, None, None, :], bg[:, None, None, :]).astype(np.float32)
    # random linear brightness gradient and Gaussian pixel noise
    gdir = rng.uniform(0.0, 2 * np.pi, n)
    gamp = rng.uniform(0.0, 40.0, n)
    grad = (np.cos(gdir)[:, None, None] * (xx - S / 2) + np.sin(gdir)[:, None, None] * (yy - S / 2))
    img += (gamp[:, None, None] / S * grad)[..., None].astype(np.float32)
    img += rng.normal(0.0, 18.0, img.shape).astype(np.float32)
    X = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return X, y


def load_builtin_dataset(num_train=5000, num_val=500, num_test=500, seed=0, dtype=np.float32):
    """A small 10-class image dataset that needs no download (see :func:`make_builtin_images`).

    ``num_train + num_val + num_test`` images are generated from ``seed`` and split in that
    order; all splits are normalised with the per-channel mean/std of the training split
    (:func:`preprocess_images`). A linear classifier on the pixels does poorly on it while a
    small ConvNet does well, because the classes differ in spatial structure, not colour.

    Returns a dict with ``X_train (num_train, 3, 32, 32)``, ``y_train (num_train,)``,
    ``X_val``, ``y_val``, ``X_test``, ``y_test`` (images of ``dtype``, labels int64),
    ``class_names`` (list of 10 str), and the normalisation statistics ``mean`` and ``std``
    (``(3,)`` arrays on the [0, 1] scale).
    """
    dt = check_float_dtype(dtype)
    num_train = check_count("num_train", num_train, allow_zero=False)
    num_val = check_count("num_val", num_val)
    num_test = check_count("num_test", num_test)
    X, y = make_builtin_images(num_train + num_val + num_test, seed)
    a, b = num_train, num_train + num_val
    X_train, mean, std = preprocess_images(X[:a], dtype=dt)
    X_val, _, _ = preprocess_images(X[a:b], mean, std, dtype=dt)
    X_test, _, _ = preprocess_images(X[b:], mean, std, dtype=dt)
    return {
        "X_train": X_train,
        "y_train": y[:a],
        "X_val": X_val,
        "y_val": y[a:b],
        "X_test": X_test,
        "y_test": y[b:],
        "class_names": list(BUILTIN_CLASS_NAMES),
        "mean": mean,
        "std": std,
    }
