"""Saving and loading models and training state as ``.npz`` files.

Files hold arrays plus one JSON document (stored as a string array under ``__meta__``), and
are always read with ``allow_pickle=False``: loading a file never runs code. Writes go to a
temporary file beside the target and are renamed over it, so a crash mid-write never
destroys the previous good file.
"""

import json
import os
import tempfile

import numpy as np

META_KEY = "__meta__"


def atomic_savez(path, arrays, meta):
    """Write ``arrays`` (dict name -> array) and the JSON-serialisable ``meta`` to ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    payload = dict(arrays)
    payload[META_KEY] = np.array(json.dumps(meta))
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def load_npz(path):
    """Return ``(arrays, meta)`` from a file written by atomic_savez."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path} is not a readable convlab .npz file: {err}") from err
    if META_KEY not in arrays:
        raise ValueError(f"{path} has no convlab metadata; was it written by convlab?")
    return arrays, json.loads(str(arrays.pop(META_KEY)))


def _model_classes():
    # Imported here because the classifiers import the layers, which do not need this module.
    from convlab import classifiers

    return {name: getattr(classifiers, name) for name in classifiers.__all__}


def save_model(model, path):
    """Save a convlab classifier (constructor arguments, parameters, batchnorm statistics)."""
    cls = type(model).__name__
    if cls not in _model_classes() or not hasattr(model, "init_args"):
        raise TypeError(f"save_model takes a convlab classifier, got {cls}")
    meta = {"format": "convlab-model", "version": 1, "class": cls, "init_args": model.init_args}
    atomic_savez(path, model.state_dict(), meta)


def load_model(path):
    """Rebuild a classifier saved by save_model, with its parameters and statistics."""
    arrays, meta = load_npz(path)
    if meta.get("format") != "convlab-model":
        raise ValueError(f"{path} is not a convlab model file (format {meta.get('format')!r})")
    classes = _model_classes()
    if meta.get("class") not in classes:
        raise ValueError(f"{path} names unknown model class {meta.get('class')!r}")
    model = classes[meta["class"]](**meta["init_args"])
    model.load_state_dict(arrays)
    return model
