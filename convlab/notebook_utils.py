"""Small helpers shared by the tutorial notebooks in ``notebooks/``.

Environment variables read here:

- ``CONVLAB_FAST``: ``1`` (or ``true``/``yes``/``on``) selects the fast mode: tiny data subsets
  and one or two epochs, so the notebooks execute in seconds (used by the tests / CI).
- ``CONVLAB_NOTEBOOK_FIGDIR``: when set, :func:`save_figure` writes figures as PNG there.
- ``CONVLAB_DATASET``: ``auto`` (default: CIFAR-10 when found, else the built-in dataset),
  ``cifar10``, ``builtin`` or the path of an image folder or tarball.
"""

import os
from pathlib import Path

import numpy as np

FAST_ENV = "CONVLAB_FAST"
FIGDIR_ENV = "CONVLAB_NOTEBOOK_FIGDIR"
DATASET_ENV = "CONVLAB_DATASET"

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

    ``source`` is anything :func:`convlab.data.load_dataset` takes: ``'auto'``,
    ``'cifar10'``, ``'builtin'`` or the path of an image folder or tarball (default:
    ``$CONVLAB_DATASET`` or ``'auto'``). CIFAR-10 has its mean image subtracted (the cs231n
    recipe); built-in and folder images are normalised per channel; ``seed`` selects the
    built-in images. For a folder, ``num_train`` caps the training split and a progress bar
    shows the decoding when ``verbose``.

    Returns a dict with ``X_train (num_train, 3, 32, 32)``, ``y_train``, ``X_val``, ``y_val``,
    ``X_test`` and ``y_test`` (not for folders), ``class_names`` and ``source``
    (``'cifar10'``, ``'builtin'`` or ``'folder'``).
    """
    from convlab.data import load_dataset

    source = (source or os.environ.get(DATASET_ENV) or "auto").strip()
    if source.lower() in ("auto", "cifar10", "builtin"):
        source = source.lower()
    folder = source not in ("auto", "cifar10", "builtin")
    data = load_dataset(source, sizes=None if folder else (num_train, num_val, num_test),
                        seed=seed, dtype=dtype, num_train=num_train if folder else None,
                        progress=verbose)
    if verbose:
        splits = " / ".join(f"{len(data['X_' + split])} {split}"
                            for split in ("train", "val", "test") if "X_" + split in data)
        print(f"Using {data.pop('description')}: {splits} images"
              + (" (fast mode)" if fast_mode() else ""))
    else:
        data.pop("description")
    return data


def load_course_images(num_train=5000, num_val=500, num_test=500, source=None, seed=0,
                       verbose=True):
    """Raw images for the assignment-1 notebooks, as the course's ``load_CIFAR10`` gives
    them: float64 (N, 32, 32, 3) pixel values 0..255, not centred (the notebooks subtract
    the mean image themselves).

    ``source`` as in :func:`load_course_data`. CIFAR-10: the first num_train training
    images, the next num_val for validation, the first num_test test images. Built-in:
    that many generated images in the same split. An image folder: the last num_val images
    of each class for validation (num_val // classes each), a stratified num_train of the
    rest, no test split (num_test ignored).

    Returns a dict with ``X_train``, ``y_train``, ``X_val``, ``y_val``, ``X_test``,
    ``y_test`` (absent for folders), ``class_names`` and ``source``.
    """
    from convlab.data import (
        BUILTIN_CLASS_NAMES,
        CIFAR10_CLASS_NAMES,
        find_CIFAR10_dir,
        load_CIFAR10,
        load_image_folder,
        make_builtin_images,
        split_per_class,
        stratified_subset,
    )
    from convlab.data.sources import resolve_source

    source = (source or os.environ.get(DATASET_ENV) or "auto").strip()
    name = resolve_source(source.lower() if source.lower() in ("auto", "cifar10", "builtin")
                          else source)
    if name == "cifar10":
        X, y, X_test, y_test = load_CIFAR10(find_CIFAR10_dir(), dtype=np.float64)
        a, b = num_train, num_train + num_val
        data = {"X_train": X[:a], "y_train": y[:a], "X_val": X[a:b], "y_val": y[a:b],
                "X_test": X_test[:num_test], "y_test": y_test[:num_test],
                "class_names": list(CIFAR10_CLASS_NAMES), "source": "cifar10"}
    elif name == "builtin":
        X, y = make_builtin_images(num_train + num_val + num_test, seed)
        X = X.astype(np.float64)
        a, b = num_train, num_train + num_val
        data = {"X_train": X[:a], "y_train": y[:a], "X_val": X[a:b], "y_val": y[a:b],
                "X_test": X[b:], "y_test": y[b:], "class_names": list(BUILTIN_CLASS_NAMES),
                "source": "builtin"}
    else:
        X, y, class_names = load_image_folder(name, progress=verbose)
        X_train, y_train, X_val, y_val = split_per_class(X, y, num_val // len(class_names))
        keep = stratified_subset(y_train, min(num_train, len(y_train)), seed)
        data = {"X_train": X_train[keep].astype(np.float64), "y_train": y_train[keep],
                "X_val": X_val.astype(np.float64), "y_val": y_val,
                "class_names": class_names, "source": "folder"}
    if verbose:
        splits = " / ".join(f"{len(data['X_' + split])} {split}"
                            for split in ("train", "val", "test") if "X_" + split in data)
        print(f"Using {data['source']} images: {splits}" + (" (fast mode)" if fast_mode() else ""))
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
