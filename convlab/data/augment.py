"""Augmentation of whole ``(N, C, H, W)`` batches, vectorised (no Python loop over images),
with all randomness from an explicit ``np.random.Generator``."""

import numpy as np

from convlab._checks import check_count


def _check_batch(X, rng):
    if not isinstance(X, np.ndarray) or X.ndim != 4:
        raise ValueError(
            f"X must be a (N, C, H, W) array, got {getattr(X, 'shape', type(X).__name__)}"
        )
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (e.g. np.random.default_rng(0)), "
            f"got {type(rng).__name__}"
        )


def random_crop_flip(X, rng, pad=4, flip=True):
    """Random translation by padded cropping, plus random horizontal flips.

    Inputs:
    - X: ``(N, C, H, W)`` batch.
    - rng: ``np.random.Generator`` supplying all randomness.
    - pad: zero padding added on each side; each image is cropped back to ``H x W`` at an
      offset drawn uniformly from ``0..2*pad`` in each direction.
    - flip: if True each image is mirrored left-right with probability 0.5.

    Returns a new ``(N, C, H, W)`` array of X's dtype (X is not modified). Vectorised: one
    fancy-indexing gather, no Python loop over images.
    """
    _check_batch(X, rng)
    pad = check_count("pad", pad)
    N, C, H, W = X.shape
    oy = rng.integers(0, 2 * pad + 1, size=N)
    ox = rng.integers(0, 2 * pad + 1, size=N)
    flips = rng.random(N) < 0.5 if flip else np.zeros(N, dtype=bool)
    src = np.pad(X, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else X
    rows = oy[:, None] + np.arange(H)  # (N, H)
    cols = ox[:, None] + np.arange(W)  # (N, W)
    cols = np.where(flips[:, None], cols[:, ::-1], cols)
    n_idx = np.arange(N)[:, None, None, None]
    c_idx = np.arange(C)[None, :, None, None]
    return src[n_idx, c_idx, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop(X, rng, pad=4):
    """Random padded crop of each image of ``X (N, C, H, W)``; no flips. Same shape and dtype."""
    return random_crop_flip(X, rng, pad=pad, flip=False)


def random_flip(X, rng):
    """Mirror each image of ``X (N, C, H, W)`` left-right with probability 0.5.

    Returns a new array of the same shape and dtype; ``rng`` is a ``np.random.Generator``.
    """
    _check_batch(X, rng)
    flips = rng.random(X.shape[0]) < 0.5
    out = X.copy()
    out[flips] = X[flips, :, :, ::-1]
    return out
