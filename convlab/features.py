"""Hand-made image features (CS231n assignment 1): a histogram of oriented gradients and a
colour histogram, and ``extract_features`` to stack them for a set of images.

Images are (H, W, 3) arrays with values in [0, 255], as the course loads CIFAR-10.
"""

import numpy as np
from matplotlib.colors import rgb_to_hsv

__all__ = ["color_histogram_hsv", "extract_features", "hog_feature", "rgb2gray"]


def extract_features(imgs, feature_fns, verbose=False):
    """Features (N, F) of imgs (N, H, W, C): each image's feature_fns outputs, flattened
    and concatenated in order (F is their total length)."""
    imgs = np.asarray(imgs)
    if imgs.ndim < 3 or len(imgs) == 0:
        raise ValueError(f"imgs must be a non-empty (N, H, W[, C]) array, got {imgs.shape}")
    first = [np.asarray(fn(imgs[0])).ravel() for fn in feature_fns]
    features = np.empty((len(imgs), sum(f.size for f in first)))
    features[0] = np.concatenate(first)
    for i in range(1, len(imgs)):
        features[i] = np.concatenate([np.asarray(fn(imgs[i])).ravel() for fn in feature_fns])
        if verbose and i % 1000 == 999:
            print(f"done extracting features for {i + 1} / {len(imgs)} images")
    return features


def rgb2gray(rgb):
    """Luma (H, W) of an (H, W, 3) RGB image, weights 0.299 R + 0.587 G + 0.144 B as the
    course's code has them."""
    return np.dot(rgb[..., :3], [0.299, 0.587, 0.144])


def hog_feature(im, orientations=9, cell=8):
    """Histogram of oriented gradients, (H // cell) (W // cell) orientations values.

    The image's gradient (forward differences) is split by direction into ``orientations``
    bins over [0, 180) degrees; each value is the mean gradient magnitude of one bin over
    one cell x cell block (cells laid out column by column, bins innermost)."""
    image = rgb2gray(im) if np.ndim(im) == 3 else np.atleast_2d(np.asarray(im, dtype=float))
    H, W = image.shape
    gx = np.zeros(image.shape)
    gy = np.zeros(image.shape)
    gx[:, :-1] = np.diff(image, axis=1)
    gy[:-1, :] = np.diff(image, axis=0)
    magnitude = np.sqrt(gx ** 2 + gy ** 2)
    # Direction in (0, 180]: arctan2 is in (-180, 180], shifted by 90.
    direction = np.degrees(np.arctan2(gy, gx + 1e-15)) + 90
    rows, cols = H // cell, W // cell
    width = 180 / orientations
    histogram = np.zeros((cols, rows, orientations))
    blocks = (slice(0, rows * cell), slice(0, cols * cell))
    for b in range(orientations):
        # A pixel votes for bin b when its direction lies in [b width, (b + 1) width);
        # a direction of exactly 0 votes for none (the course's rule).
        in_bin = (direction >= width * b) & (direction < width * (b + 1)) & (direction > 0)
        votes = np.where(in_bin, magnitude, 0)[blocks]
        means = votes.reshape(rows, cell, cols, cell).mean(axis=(1, 3))   # (rows, cols)
        histogram[:, :, b] = means.T
    return histogram.ravel()


def color_histogram_hsv(im, nbin=10, xmin=0, xmax=255, normalized=True):
    """Histogram (nbin,) of the hue of an (H, W, 3) RGB image with values in [xmin, xmax];
    ``normalized``: a density times the bin width, so the values sum to 1."""
    im = np.asarray(im, dtype=float)
    bins = np.linspace(xmin, xmax, nbin + 1)
    hue = rgb_to_hsv(im / xmax)[..., 0] * xmax
    counts, edges = np.histogram(hue, bins=bins, density=normalized)
    return counts * np.diff(edges)
