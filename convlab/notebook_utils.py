"""Small helpers shared by the tutorial notebooks in ``notebooks/``.

Environment variables read here:

- ``CONVLAB_FAST``: ``1`` (or ``true``/``yes``/``on``) selects the fast mode: tiny data subsets
  and one or two epochs, so the notebooks execute in seconds (used by the tests / CI).
- ``CONVLAB_NOTEBOOK_FIGDIR``: when set, :func:`save_figure` writes figures as PNG there.
- ``CONVLAB_DATASET``: ``auto`` (default: CIFAR-10 when found, else the built-in dataset),
  ``cifar10`` or ``builtin``.
"""

import os
from pathlib import Path

import numpy as np

FAST_ENV = "CONVLAB_FAST"
FIGDIR_ENV = "CONVLAB_NOTEBOOK_FIGDIR"
DATASET_ENV = "CONVLAB_DATASET"

CIFAR10_CLASSES = [
    "plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]

_TRUE = {"1", "true", "yes", "on"}


def fast_mode():
    """True when ``$CONVLAB_FAST`` is set to 1/true/yes/on."""
    return os.environ.get(FAST_ENV, "").strip().lower() in _TRUE


def choose(fast, full):
    """``fast`` in fast mode, ``full`` otherwise (e.g. ``num_epochs = choose(1, 10)``)."""
    return fast if fast_mode() else full


def load_course_data(num_train=5000, num_val=500, num_test=500, source=None, seed=0,
                     dtype=np.float32, verbose=True):
    """Training data for the notebooks: CIFAR-10 when available, else the built-in dataset.

    ``source`` is ``'auto'``, ``'cifar10'`` or ``'builtin'`` (default: ``$CONVLAB_DATASET`` or
    ``'auto'``). CIFAR-10 comes from :func:`convlab.data_utils.get_CIFAR10_data` (mean image
    subtracted); the built-in images from :func:`convlab.data_utils.load_builtin_dataset`
    (normalised per channel; ``seed`` selects the images).

    Returns a dict with ``X_train (num_train, 3, 32, 32)``, ``y_train``, ``X_val``, ``y_val``,
    ``X_test``, ``y_test``, ``class_names`` (10 str) and ``source`` (``'cifar10'`` or
    ``'builtin'``).
    """
    from convlab import data_utils

    source = (source or os.environ.get(DATASET_ENV) or "auto").strip().lower()
    if source not in ("auto", "cifar10", "builtin"):
        raise ValueError(f"source must be 'auto', 'cifar10' or 'builtin', got {source!r}")
    data = None
    if source in ("auto", "cifar10"):
        try:
            data = data_utils.get_CIFAR10_data(
                num_training=num_train, num_validation=num_val, num_test=num_test, dtype=dtype
            )
        except FileNotFoundError:
            if source == "cifar10":
                raise
        else:
            data["class_names"] = list(CIFAR10_CLASSES)
            data["source"] = "cifar10"
    if data is None:
        data = data_utils.load_builtin_dataset(
            num_train=num_train, num_val=num_val, num_test=num_test, seed=seed, dtype=dtype
        )
        data["source"] = "builtin"
    if verbose:
        what = "CIFAR-10" if data["source"] == "cifar10" else "built-in procedural dataset"
        print(
            f"Using {what}: {len(data['X_train'])} train / {len(data['X_val'])} val / "
            f"{len(data['X_test'])} test images" + (" (fast mode)" if fast_mode() else "")
        )
    return data


def figure_dir():
    """The directory in ``$CONVLAB_NOTEBOOK_FIGDIR`` as a Path, or None when unset."""
    value = os.environ.get(FIGDIR_ENV, "").strip()
    return Path(value).expanduser() if value else None


def save_figure(fig, name, dpi=100):
    """Save ``fig`` as ``$CONVLAB_NOTEBOOK_FIGDIR/<name>.png`` if that variable is set.

    Creates the directory if needed. Returns the path written (a Path) or None.
    """
    directory = figure_dir()
    if directory is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    filename = name if str(name).lower().endswith(".png") else f"{name}.png"
    path = directory / filename
    fig.savefig(path, dpi=dpi)
    print(f"saved {path}")
    return path
