"""Training and evaluation figures.

Each function returns a :class:`matplotlib.figure.Figure` and never calls ``plt.show()``,
so the figure displays inline in Jupyter (as the value of the last expression in a cell) and
can be written with ``fig.savefig("name.png")``. Only the object-oriented matplotlib API is
used and ``rcParams`` are not changed.

- :func:`plot_solver_history` -- loss per iteration and train/val accuracy per epoch of one
  or several :class:`~convlab.solver.Solver` runs.
- :func:`show_conv_filters` -- first-layer convolution filters ``(F, C, HH, WW)`` as an image
  grid.
- :func:`confusion_matrix` / :func:`plot_confusion_matrix` -- counts or row-normalised
  rates, with the value in each cell.
- :func:`plot_predictions` -- sample images titled by the predicted class, wrong ones in red.
"""

import math
from collections.abc import Mapping

import numpy as np

from convlab._checks import as_real_array, check_int, check_labels

_HISTORY_KEYS = ("loss_history", "train_acc_history", "val_acc_history")


def _new_figure(nrows=1, ncols=1, figsize=None, **kwargs):
    """A figure with a grid of axes, made without pyplot's global state where possible.

    ``plt.subplots`` would register the figure with pyplot (it keeps it open, and in Jupyter
    the inline backend would then draw it a second time when the cell ends). A bare
    ``Figure`` is still shown inline when it is a cell's value and can be saved with savefig.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def _is_solver_like(obj):
    return all(hasattr(obj, key) for key in _HISTORY_KEYS)


def _histories_of(obj, name):
    """{'loss_history': [...], ...} from a Solver-like object or a dict of histories."""
    if _is_solver_like(obj):
        hist = {key: getattr(obj, key) for key in _HISTORY_KEYS}
    elif isinstance(obj, Mapping) and all(key in obj for key in _HISTORY_KEYS):
        hist = {key: obj[key] for key in _HISTORY_KEYS}
    else:
        raise TypeError(
            f"{name} must be a Solver or a dict with keys {', '.join(_HISTORY_KEYS)}, "
            f"got {type(obj).__name__}"
        )
    out = {}
    for key, values in hist.items():
        arr = as_real_array(values, f"{name}.{key}").astype(np.float64)
        if arr.ndim != 1:
            raise ValueError(f"{name}.{key} must be one-dimensional, got shape {arr.shape}")
        out[key] = arr
    return out


def _collect_runs(solver_or_histories):
    if _is_solver_like(solver_or_histories) or (
        isinstance(solver_or_histories, Mapping)
        and any(key in solver_or_histories for key in _HISTORY_KEYS)
    ):
        return {None: _histories_of(solver_or_histories, "solver_or_histories")}
    if isinstance(solver_or_histories, Mapping):
        if not solver_or_histories:
            raise ValueError("solver_or_histories is an empty dict; nothing to plot")
        return {
            str(name): _histories_of(run, f"solver_or_histories[{name!r}]")
            for name, run in solver_or_histories.items()
        }
    raise TypeError(
        "solver_or_histories must be a Solver, a dict of histories (loss_history, "
        "train_acc_history, val_acc_history) or a dict mapping run names to those, got "
        f"{type(solver_or_histories).__name__}"
    )


def _moving_average(values, window):
    if window <= 1 or len(values) < window:
        return np.arange(len(values)), values
    kernel = np.ones(window) / window
    smoothed = np.convolve(values, kernel, mode="valid")
    return np.arange(window - 1, len(values)), smoothed


def plot_solver_history(solver_or_histories, title=None, smooth=1, figsize=(12, 4.5)):
    """Training curves of one or several runs.

    Inputs:
    - solver_or_histories: a :class:`~convlab.solver.Solver` (after ``train()``), a dict with
      ``loss_history`` (one loss per iteration), ``train_acc_history`` and
      ``val_acc_history`` (one accuracy per check, the first before any update, then one per
      epoch), or a dict ``{run name: Solver or such dict}`` to overlay several runs.
    - title: optional figure title.
    - smooth: window (iterations) of a moving average drawn over the raw loss (1 = off).
    - figsize: figure size in inches.

    Returns a Figure with two axes: ``axes[0]`` loss vs iteration (one line per run),
    ``axes[1]`` accuracy vs epoch (train dashed, validation solid, one colour per run); both
    have legends. Accuracy entry ``i`` is drawn at epoch ``i``.
    """
    runs = _collect_runs(solver_or_histories)
    smooth = check_int(smooth, "smooth")
    fig, axes = _new_figure(1, 2, figsize=figsize)
    ax_loss, ax_acc = axes[0]
    single = list(runs) == [None]
    for i, (name, hist) in enumerate(runs.items()):
        color = f"C{i % 10}"
        loss = hist["loss_history"]
        loss_label = "training loss" if single else name
        if smooth > 1 and len(loss) >= smooth:
            ax_loss.plot(np.arange(len(loss)), loss, color=color, alpha=0.25, linewidth=0.8)
            xs, ys = _moving_average(loss, smooth)
            ax_loss.plot(xs, ys, color=color, label=loss_label)
        else:
            marker = "o" if len(loss) <= 50 else None
            ax_loss.plot(loss, color=color, marker=marker, markersize=3, label=loss_label)
        for key, style, what in (("train_acc_history", "--", "train"),
                                 ("val_acc_history", "-", "val")):
            acc = hist[key]
            label = what if single else f"{name} {what}"
            ax_acc.plot(np.arange(len(acc)), acc, linestyle=style, marker="o", markersize=4,
                        color=color, label=label)
    ax_loss.set_xlabel("Iteration")
    ax_loss.set_ylabel("Loss")
    ax_loss.set_title("Training loss")
    ax_acc.set_xlabel("Epoch")
    ax_acc.set_ylabel("Accuracy")
    ax_acc.set_title("Accuracy")
    from matplotlib.ticker import MaxNLocator

    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(loc="best", fontsize="small")
    if title is not None:
        fig.suptitle(str(title))
    return fig


def show_conv_filters(W, padding=1, title=None, figsize=(6, 6)):
    """First-layer convolution filters as one image.

    Inputs:
    - W: weights ``(F, C, HH, WW)`` with ``C`` = 3 (shown in colour) or 1 (grey scale);
      each filter is rescaled to its own [min, max] (see :func:`visualize_grid`).
    - padding: pixels between filters.
    - title: axes title; default ``"F filters, CxHHxWW"``.

    Returns a Figure with one axes holding the grid image; its array
    (``fig.axes[0].images[0].get_array()``) has shape ``(G*HH + (G-1)*padding,
    G*WW + (G-1)*padding, 3)`` (2-D for C = 1), values in [0, 1], with ``G = ceil(sqrt(F))``.
    """
    W = as_real_array(W, "W")
    if W.ndim != 4:
        raise ValueError(f"W must have shape (F, C, HH, WW), got shape {W.shape}")
    F, C, HH, WW = W.shape
    if C not in (1, 3):
        raise ValueError(
            f"W has {C} input channels; only first-layer filters with C = 3 (RGB) or C = 1 "
            "(grey) can be drawn as images"
        )
    from convlab.vis_utils import visualize_grid

    grid = visualize_grid(W.transpose(0, 2, 3, 1), ubound=1.0, padding=padding)
    fig, axes = _new_figure(1, 1, figsize=figsize)
    ax = axes[0, 0]
    if C == 1:
        ax.imshow(grid[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(f"{F} filters, {C}x{HH}x{WW}" if title is None else str(title))
    return fig


def confusion_matrix(y_true, y_pred, num_classes=None):
    """Counts ``cm[i, j]`` of examples with true class i predicted as class j.

    Inputs: ``y_true (N,)``, ``y_pred (N,)`` integer labels; ``num_classes`` (default: the
    largest label + 1). Returns an int64 array ``(num_classes, num_classes)``.
    """
    y_true = check_labels(y_true, name="y_true")
    y_pred = check_labels(y_pred, name="y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true and y_pred must have the same length, got {len(y_true)} and {len(y_pred)}"
        )
    largest = int(max(y_true.max(initial=-1), y_pred.max(initial=-1)))
    if num_classes is None:
        num_classes = largest + 1
    num_classes = check_int(num_classes, "num_classes")
    if num_classes == 0:
        raise ValueError("cannot build a confusion matrix with no classes")
    if largest >= num_classes:
        raise ValueError(f"label {largest} out of range for {num_classes} classes")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def _check_class_names(class_names, name="class_names"):
    if isinstance(class_names, (str, bytes)) or not hasattr(class_names, "__len__"):
        raise TypeError(f"{name} must be a sequence of class names, got {class_names!r}")
    return [str(c) for c in class_names]


def plot_confusion_matrix(y_true, y_pred, class_names=None, normalize=False, title=None,
                          cmap="Blues", annotate=True, figsize=None):
    """Confusion matrix of a classifier.

    Inputs:
    - y_true, y_pred: integer labels ``(N,)``.
    - class_names: K names; the matrix is K x K (default: the largest label + 1 classes,
      named by their index).
    - normalize: False shows counts; True divides each row by its total, so cell (i, j) is the
      fraction of class i predicted as j (rows with no examples stay 0).
    - annotate: write each cell's value in it (integer counts, or two decimals).

    Returns a Figure with one axes: rows are true classes (y axis "True label"), columns
    predicted classes (x axis "Predicted label"); the plotted matrix is
    ``fig.axes[0].images[0].get_array()``. A colour bar is added as a second axes.
    """
    num_classes = None
    if class_names is not None:
        class_names = _check_class_names(class_names)
        num_classes = len(class_names)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    K = cm.shape[0]
    if class_names is None:
        class_names = [str(k) for k in range(K)]
    if normalize:
        totals = cm.sum(axis=1, keepdims=True)
        values = np.divide(cm, totals, out=np.zeros(cm.shape), where=totals > 0)
    else:
        values = cm
    if figsize is None:
        side = min(max(4.0, 0.6 * K + 2.5), 16.0)
        figsize = (side + 1.0, side)
    fig, axes = _new_figure(1, 1, figsize=figsize)
    ax = axes[0, 0]
    vmax = 1.0 if normalize else max(int(cm.max()), 1)
    im = ax.imshow(values, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(np.arange(K))
    ax.set_yticks(np.arange(K))
    ax.set_xticklabels(class_names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticklabels(class_names)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    if title is None:
        accuracy = np.trace(cm) / max(cm.sum(), 1)
        title = f"Confusion matrix{' (row-normalised)' if normalize else ''}, " \
                f"accuracy {accuracy:.3f}"
    ax.set_title(str(title))
    if annotate:
        threshold = vmax / 2.0
        for i in range(K):
            for j in range(K):
                v = values[i, j]
                text = f"{v:.2f}" if normalize else f"{int(v)}"
                ax.text(j, i, text, ha="center", va="center", fontsize="small",
                        color="white" if v > threshold else "black")
    return fig


def _images_for_display(X):
    """(N, H, W, 3|1) or (N, 3|1, H, W) -> (N, H, W, C) floats each rescaled to [0, 1]."""
    X = as_real_array(X, "X")
    if X.ndim != 4:
        raise ValueError(f"X must have shape (N, C, H, W) or (N, H, W, C), got shape {X.shape}")
    if X.shape[1] in (1, 3) and X.shape[3] not in (1, 3):
        X = X.transpose(0, 2, 3, 1)
    elif X.shape[3] not in (1, 3):
        raise ValueError(f"X must have 1 or 3 channels, got shape {X.shape}")
    X = X.astype(np.float64)
    lo = X.min(axis=(1, 2, 3), keepdims=True)
    hi = X.max(axis=(1, 2, 3), keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    return (X - lo) / span


def plot_predictions(X, y_true, y_pred, class_names, max_images=16, ncols=None,
                     only_wrong=False, title=None, figsize=None):
    """A grid of images, each titled with its predicted class; mistakes drawn in red.

    Inputs:
    - X: images ``(N, C, H, W)`` (convlab layout) or ``(N, H, W, C)``, C = 1 or 3; each image
      is rescaled to [0, 1] for display, so mean-subtracted data is fine.
    - y_true, y_pred: integer labels ``(N,)``.
    - class_names: names indexed by label.
    - max_images: at most this many images (the first ones, or the first mistakes).
    - ncols: columns of the grid (default ``ceil(sqrt(n))``).
    - only_wrong: show only misclassified images.

    Returns a Figure with ``nrows * ncols`` axes (unused ones hidden). A correct image's title
    is its predicted class name (green); a wrong one's is ``"<pred>\\n(true: <true>)"`` in red,
    with a red frame.
    """
    images = _images_for_display(X)
    y_true = check_labels(y_true, name="y_true")
    y_pred = check_labels(y_pred, name="y_pred")
    class_names = _check_class_names(class_names)
    N = images.shape[0]
    if len(y_true) != N or len(y_pred) != N:
        raise ValueError(
            f"X has {N} images but y_true has {len(y_true)} and y_pred {len(y_pred)} labels"
        )
    if N and max(y_true.max(), y_pred.max()) >= len(class_names):
        raise ValueError(
            f"label {int(max(y_true.max(), y_pred.max()))} has no entry in class_names "
            f"({len(class_names)} names)"
        )
    max_images = check_int(max_images, "max_images")
    indices = np.flatnonzero(y_true != y_pred) if only_wrong else np.arange(N)
    indices = indices[:max_images]
    n = len(indices)
    if n == 0:
        raise ValueError("no images to show" + (" (no mistakes)" if only_wrong else ""))
    if ncols is None:
        ncols = int(math.ceil(math.sqrt(n)))
    ncols = check_int(ncols, "ncols")
    if ncols == 0:
        raise ValueError("ncols must be at least 1")
    ncols = min(ncols, n)
    nrows = int(math.ceil(n / ncols))
    if figsize is None:
        figsize = (1.7 * ncols, 1.9 * nrows + (0.4 if title else 0.0))
    fig, axes = _new_figure(nrows, ncols, figsize=figsize)
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.set_visible(False)
            continue
        i = indices[k]
        img = images[i]
        if img.shape[2] == 1:
            ax.imshow(img[:, :, 0], cmap="gray", vmin=0.0, vmax=1.0)
        else:
            ax.imshow(img)
        ax.set_xticks([])
        ax.set_yticks([])
        pred, true = class_names[y_pred[i]], class_names[y_true[i]]
        if y_pred[i] == y_true[i]:
            ax.set_title(pred, color="green", fontsize="small")
        else:
            ax.set_title(f"{pred}\n(true: {true})", color="red", fontsize="small")
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2.5)
    if title is not None:
        fig.suptitle(str(title))
    return fig
