"""Tiny ImageNet in its official directory layout (the course's ``load_tiny_imagenet``).

    <path>/wnids.txt                     one WordNet id per line, in label order
    <path>/words.txt                     "<wnid>\\t<name>, <name>, ..." per line
    <path>/train/<wnid>/<wnid>_boxes.txt "<image file>\\t<box>" per line
    <path>/train/<wnid>/images/<file>    64x64 JPEGs
    <path>/val/val_annotations.txt       "<image file>\\t<wnid>\\t<box>" per line
    <path>/val/images/<file>
    <path>/test/images/<file>            (labels in test/test_annotations.txt, if present)
"""

import os

import numpy as np

from convlab._checks import check_float_dtype
from convlab.data.image_folder import _decode_image

TINY_IMAGENET_SIZE = 64


def _read_lines(path):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Tiny ImageNet file {path} not found")
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def _columns(path, minimum):
    """The tab-separated lines of ``path``, each with at least ``minimum`` columns."""
    rows = [line.split("\t") for line in _read_lines(path)]
    for number, row in enumerate(rows, start=1):
        if len(row) < minimum:
            raise ValueError(f"{path}, line {number}: expected {minimum} tab-separated "
                             f"columns, got {len(row)}")
    return rows


def _load_images(directory, names, dtype):
    """(len(names), 3, 64, 64) images of ``dtype``; every file checked before allocating."""
    paths = []
    for name in names:
        path = os.path.join(directory, name)
        if os.path.basename(name) != name or not os.path.isfile(path):
            raise FileNotFoundError(f"Tiny ImageNet image {path} not found")
        paths.append(path)
    X = np.empty((len(paths), 3, TINY_IMAGENET_SIZE, TINY_IMAGENET_SIZE), dtype=dtype)
    for i, path in enumerate(paths):
        image = _decode_image(path, path, directory, None)  # (H, W, 3) uint8; gray -> RGB
        if image.shape[:2] != (TINY_IMAGENET_SIZE, TINY_IMAGENET_SIZE):
            raise ValueError(f"{path} is {image.shape[1]}x{image.shape[0]}, Tiny ImageNet "
                             f"images are {TINY_IMAGENET_SIZE}x{TINY_IMAGENET_SIZE}")
        X[i] = image.transpose(2, 0, 1)
    return X


def load_tiny_imagenet(path, dtype=np.float32, subtract_mean=True):
    """Load Tiny ImageNet (or a subset with the same layout) from ``path``.

    Returns a dict with ``class_names`` (for each label, the list of its WordNet names),
    ``X_train`` (N, 3, 64, 64) of ``dtype``, ``y_train`` (N,) int64, ``X_val``, ``y_val``,
    ``X_test``, ``y_test`` (None without test/test_annotations.txt) and ``mean_image``
    (3, 64, 64), the training mean, subtracted from every split when ``subtract_mean``.
    Test images are in file-name order. FileNotFoundError for a missing file, ValueError
    for a malformed one or an unknown WordNet id.
    """
    dtype = check_float_dtype(dtype)
    wnids = [line.strip() for line in _read_lines(os.path.join(path, "wnids.txt"))]
    wnid_to_label = {wnid: i for i, wnid in enumerate(wnids)}
    wnid_to_words = {row[0]: [w.strip() for w in row[1].split(",")]
                     for row in _columns(os.path.join(path, "words.txt"), 2)}
    missing = [wnid for wnid in wnids if wnid not in wnid_to_words]
    if missing:
        raise ValueError(f"words.txt has no names for {', '.join(missing[:5])}")
    class_names = [wnid_to_words[wnid] for wnid in wnids]

    def label(wnid, source):
        if wnid not in wnid_to_label:
            raise ValueError(f"{source} names {wnid!r}, which is not in wnids.txt")
        return wnid_to_label[wnid]

    X_blocks, y_blocks = [], []
    for wnid in wnids:
        directory = os.path.join(path, "train", wnid)
        names = [row[0] for row in _columns(os.path.join(directory, f"{wnid}_boxes.txt"), 1)]
        X_blocks.append(_load_images(os.path.join(directory, "images"), names, dtype))
        y_blocks.append(np.full(len(names), wnid_to_label[wnid], dtype=np.int64))
    X_train, y_train = np.concatenate(X_blocks), np.concatenate(y_blocks)

    annotations = os.path.join(path, "val", "val_annotations.txt")
    val_rows = _columns(annotations, 2)
    y_val = np.array([label(row[1], annotations) for row in val_rows], dtype=np.int64)
    X_val = _load_images(os.path.join(path, "val", "images"), [row[0] for row in val_rows], dtype)

    test_dir = os.path.join(path, "test", "images")
    test_names = sorted(os.listdir(test_dir)) if os.path.isdir(test_dir) else []
    X_test = _load_images(test_dir, test_names, dtype)
    y_test = None
    test_annotations = os.path.join(path, "test", "test_annotations.txt")
    if os.path.isfile(test_annotations):
        file_to_wnid = {row[0]: row[1] for row in _columns(test_annotations, 2)}
        unlabelled = [name for name in test_names if name not in file_to_wnid]
        if unlabelled:
            raise ValueError(f"{test_annotations} has no label for {', '.join(unlabelled[:5])}")
        y_test = np.array([label(file_to_wnid[name], test_annotations) for name in test_names],
                          dtype=np.int64)

    mean_image = X_train.mean(axis=0) if len(X_train) else np.zeros(X_train.shape[1:], dtype)
    if subtract_mean:
        for X in (X_train, X_val, X_test):
            X -= mean_image
    return {"class_names": class_names, "X_train": X_train, "y_train": y_train,
            "X_val": X_val, "y_val": y_val, "X_test": X_test, "y_test": y_test,
            "mean_image": mean_image}
