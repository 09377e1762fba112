"""One entry point for every dataset: ``load_dataset(source, ...)``.

``source`` is ``'auto'`` (CIFAR-10 when it is found, else the built-in dataset),
``'builtin'``, ``'cifar10'``, or the path of an image folder ``root/<class>/<image>`` or of a
``.tar``/``.tar.gz`` of one. Whatever the source, the result is the same dict, so training
code never needs to know where the images came from.
"""

import numpy as np

from convlab._checks import check_float_dtype
from convlab.data.builtin import load_builtin_dataset
from convlab.data.cifar10 import CIFAR10_CLASS_NAMES, find_CIFAR10_dir, get_CIFAR10_data
from convlab.data.image_folder import load_image_folder
from convlab.data.preprocess import preprocess_images, split_per_class, stratified_subset

SOURCES = ("auto", "builtin", "cifar10")
DESCRIPTIONS = {"builtin": "built-in shapes dataset", "cifar10": "CIFAR-10"}


def resolve_source(source, cifar10_dir=None):
    """'auto' -> 'cifar10' when CIFAR-10 is found, else 'builtin'; other names unchanged."""
    if source != "auto":
        return source
    try:
        find_CIFAR10_dir(cifar10_dir)
    except FileNotFoundError:
        return "builtin"
    return "cifar10"


def load_dataset(source="auto", sizes=None, seed=0, dtype=np.float32, cifar10_dir=None,
                 val_per_class=500, num_train=None, progress=False):
    """Load a dataset as a dict of splits.

    Inputs:
    - source: 'auto' | 'builtin' | 'cifar10' | path of an image folder or tarball.
    - sizes: (num_train, num_val, num_test) for 'builtin' (default (5000, 500, 500)) and
      'cifar10' (default (49000, 1000, 1000), the cs231n split); ignored for folders.
    - seed: selects the built-in images.
    - dtype: float dtype of the images.
    - cifar10_dir: where to look for CIFAR-10 first (see find_CIFAR10_dir).
    - val_per_class: images per class an image folder holds out for validation (its last
      ones in file-name order).
    - progress: show a progress bar while an image folder is decoded.
    - num_train: keep num_train training examples, drawn per class (stratified_subset with
      ``seed``) so every class keeps its share; None keeps all.

    Returns a dict with ``X_train (N, C, H, W)``, ``y_train (N,)``, ``X_val``, ``y_val``,
    ``X_test`` and ``y_test`` when the source has a test split, ``class_names`` (list of
    str), ``source`` ('builtin', 'cifar10' or 'folder') and ``description`` (for messages).
    Raises FileNotFoundError when the data is not there, ValueError for a bad source or size.
    """
    dtype = check_float_dtype(dtype)
    name = resolve_source(source, cifar10_dir)
    if name == "builtin":
        data = load_builtin_dataset(*(sizes or ()), seed=seed, dtype=dtype)
        for key in ("mean", "std"):
            data.pop(key)
    elif name == "cifar10":
        data = get_CIFAR10_data(*(sizes or ()), cifar10_dir=cifar10_dir, dtype=dtype)
        data["class_names"] = list(CIFAR10_CLASS_NAMES)
    else:
        X, y, class_names = load_image_folder(name, progress=progress)
        X_train, y_train, X_val, y_val = split_per_class(X, y, val_per_class)
        X_train, mean, std = preprocess_images(X_train, dtype=dtype)
        X_val, _, _ = preprocess_images(X_val, mean, std, dtype=dtype)
        data = {"X_train": X_train, "y_train": y_train, "X_val": X_val, "y_val": y_val,
                "class_names": class_names}
    if num_train is not None:
        keep = stratified_subset(data["y_train"], num_train, seed)
        data["X_train"] = data["X_train"][keep]
        data["y_train"] = data["y_train"][keep]
    data["source"] = name if name in DESCRIPTIONS else "folder"
    data["description"] = DESCRIPTIONS.get(name, f"image folder {name}")
    return data
