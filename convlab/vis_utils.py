"""Image grids (the CS231n visualisation helpers), returning NumPy arrays for ``imshow``:

- :func:`visualize_grid` -- ``(N, H, W, C)`` images, each rescaled to ``[0, ubound]``, tiled
  into a square grid with ``padding`` pixels between tiles.
- :func:`vis_grid` -- the same tiling with one pixel between tiles, the whole grid rescaled to
  ``[0, 1]`` at once (so relative brightness between tiles is kept).
- :func:`vis_nn` -- a list of rows of ``(H, W, C)`` images tiled row by row, rescaled to
  ``[0, 1]``.

The training and evaluation figures (plot_solver_history, show_conv_filters,
confusion_matrix, plot_confusion_matrix, plot_predictions) live in :mod:`convlab.plots` and
are re-exported here.
"""

import math
import numbers

import numpy as np

from convlab._checks import as_real_array, check_images_nhwc, check_int
from convlab.plots import (
    confusion_matrix,
    plot_confusion_matrix,
    plot_predictions,
    plot_solver_history,
    show_conv_filters,
)

__all__ = [
    "confusion_matrix",
    "plot_confusion_matrix",
    "plot_predictions",
    "plot_solver_history",
    "show_conv_filters",
    "vis_grid",
    "vis_nn",
    "visualize_grid",
]


def _rescale(a, low, high, ubound):
    """Map [low, high] linearly to [0, ubound]; a constant array maps to zeros."""
    if high > low:
        return ubound * ((a - low) / (high - low))
    return np.zeros_like(a)


# ---------------------------------------------------------------------------------------------
# Image grids
# ---------------------------------------------------------------------------------------------


def visualize_grid(Xs, ubound=255.0, padding=1):
    """Tile a batch of images into one image.

    Inputs:
    - Xs: array ``(N, H, W, C)`` of N images.
    - ubound: every tile is rescaled on its own, linearly from its ``[min, max]`` to
      ``[0, ubound]`` (a constant tile becomes 0).
    - padding: number of blank (0-valued) pixels between neighbouring tiles.

    Returns a float array ``(G*H + (G-1)*padding, G*W + (G-1)*padding, C)`` with
    ``G = ceil(sqrt(N))``; the tiles fill the grid row by row and cells without an image stay 0.
    """
    Xs = check_images_nhwc(Xs)
    padding = check_int(padding, "padding")
    if isinstance(ubound, bool) or not isinstance(ubound, numbers.Real) or not ubound > 0:
        raise ValueError(f"ubound must be a positive number, got {ubound!r}")
    N, H, W, C = Xs.shape
    G = int(math.ceil(math.sqrt(N)))
    grid = np.zeros((G * H + (G - 1) * padding, G * W + (G - 1) * padding, C))
    for n in range(N):
        row, col = divmod(n, G)
        y0, x0 = row * (H + padding), col * (W + padding)
        img = Xs[n].astype(np.float64)
        grid[y0 : y0 + H, x0 : x0 + W] = _rescale(img, img.min(), img.max(), float(ubound))
    return grid


def _tile_rows(rows, H, W, C, fill):
    """Place rows[r][c] (each (H, W, C)) on a canvas with one-pixel gaps of value ``fill``."""
    R = len(rows)
    K = max(len(row) for row in rows)
    canvas = np.full((R * (H + 1), K * (W + 1), C), fill, dtype=np.float64)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            y0, x0 = r * (H + 1), c * (W + 1)
            canvas[y0 : y0 + H, x0 : x0 + W] = img
    return canvas


def _normalise01(G):
    return _rescale(G, G.min(), G.max(), 1.0)


def vis_grid(Xs):
    """Tile images into a square grid and rescale the whole grid to [0, 1].

    Inputs:
    - Xs: array ``(N, H, W, C)``.

    Returns a float array ``(G*(H+1), G*(W+1), C)``, ``G = ceil(sqrt(N))``: images row by row,
    each followed by a one-pixel gap on its right and bottom. Gaps and empty cells take the
    smallest value of Xs before the rescaling, so they end up 0 (black). One linear map for
    the whole grid, so tiles keep their relative brightness (a constant grid becomes 0).
    """
    Xs = check_images_nhwc(Xs)
    N, H, W, C = Xs.shape
    G = int(math.ceil(math.sqrt(N)))
    rows = [list(Xs[r * G : (r + 1) * G]) for r in range(G) if r * G < N]
    while len(rows) < G:
        rows.append([])
    canvas = _tile_rows(rows, H, W, C, fill=float(Xs.min()))
    # _tile_rows sizes the width by the longest row, which is G here.
    return _normalise01(canvas)


def vis_nn(rows):
    """Tile a table of images (e.g. query images and their nearest neighbours).

    Inputs:
    - rows: sequence of R rows, each a sequence of images of one shape ``(H, W, C)``; the rows
      may differ in length (the width follows the longest row).

    Returns a float array ``(R*(H+1), K*(W+1), C)`` (K = longest row) rescaled as a whole to
    [0, 1]; one-pixel gaps and missing cells are set to the largest value before rescaling
    (white).
    """
    if isinstance(rows, np.ndarray):
        if rows.ndim != 5:
            raise ValueError(f"rows as an array must have shape (R, K, H, W, C), got {rows.shape}")
        rows = [list(r) for r in rows]
    if not isinstance(rows, (list, tuple)) or len(rows) == 0:
        raise ValueError("rows must be a non-empty list of lists of (H, W, C) images")
    checked = []
    shape = None
    for r, row in enumerate(rows):
        if isinstance(row, np.ndarray) and row.ndim == 4:
            row = list(row)
        if not isinstance(row, (list, tuple)) or len(row) == 0:
            raise ValueError(f"rows[{r}] must be a non-empty list of (H, W, C) images")
        out_row = []
        for c, img in enumerate(row):
            img = as_real_array(img, f"rows[{r}][{c}]")
            if img.ndim != 3:
                raise ValueError(f"rows[{r}][{c}] must have shape (H, W, C), got {img.shape}")
            if shape is None:
                shape = img.shape
            elif img.shape != shape:
                raise ValueError(
                    f"all images must have the same shape; rows[0][0] is {shape}, "
                    f"rows[{r}][{c}] is {img.shape}"
                )
            out_row.append(img.astype(np.float64))
        checked.append(out_row)
    H, W, C = shape
    fill = max(float(np.max(img)) for row in checked for img in row)
    return _normalise01(_tile_rows(checked, H, W, C, fill=fill))

