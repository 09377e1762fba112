"""Saving and loading models and training state as ``.npz`` files.

Files hold arrays plus one JSON document (stored as a string array under ``__meta__``), and
are always read with ``allow_pickle=False``: loading a file never runs code. Writes go to a
temporary file beside the target and are renamed over it, so a crash mid-write never
destroys the previous good file.
"""

import json
import os
import tempfile
import zipfile

import numpy as np

from convlab.backend import asnumpy

META_KEY = "__meta__"
TMP_PREFIX = ".tmp-"  # temporary files of atomic_savez, beside their target


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temporaries(directory):
    """Delete the temporary files atomic_savez left in ``directory`` when a process was
    killed mid-write; returns how many. Call it only while no other writer uses the
    directory (e.g. under a RunDir lock)."""
    removed = 0
    for name in os.listdir(directory):
        if name.startswith(TMP_PREFIX) and name.endswith(".npz"):
            os.remove(os.path.join(directory, name))
            removed += 1
    return removed


def _check_npz_sizes(path):
    """Every array in the .npz must declare exactly the bytes its member holds, so a
    hostile header (a huge shape over a few bytes) cannot make np.load allocate."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    if version == (1, 0):
                        header = np.lib.format.read_array_header_1_0(member)
                    else:
                        header = np.lib.format.read_array_header_2_0(member)
                    shape, _, dtype = header
                    declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                    if declared != info.file_size - member.tell():
                        raise ValueError(
                            f"array {info.filename!r} declares shape {shape} of {dtype} "
                            f"({declared} bytes) but holds {info.file_size - member.tell()}"
                        )
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable convlab .npz file: {err}") from err


def atomic_savez(path, arrays, meta):
    """Write ``arrays`` (dict name -> array, on any device: GPU arrays are copied to the
    host, so files are the same whatever trained them) and the JSON-serialisable ``meta``
    to ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    payload = asnumpy(dict(arrays))
    payload[META_KEY] = np.array(json.dumps(meta))
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=TMP_PREFIX, suffix=".npz")
    try:
        # mkstemp creates the file readable by its owner only; a saved model should get the
        # permissions any other file the user creates gets.
        os.fchmod(fd, 0o666 & ~_umask())
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
        _check_npz_sizes(path)
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path} is not a readable convlab .npz file: {err}") from err
    if META_KEY not in arrays:
        raise ValueError(f"{path} has no convlab metadata; was it written by convlab?")
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} has corrupt convlab metadata: {err}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} has corrupt convlab metadata (not a JSON object)")
    return arrays, meta


def _model_classes():
    # Imported here because the classifiers import the layers, which do not need this module.
    from convlab import classifiers
    from convlab.classifiers.base import Classifier

    return {name: getattr(classifiers, name) for name in classifiers.__all__
            if issubclass(getattr(classifiers, name), Classifier)}


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
    init_args = meta.get("init_args")
    if not isinstance(init_args, dict):
        raise ValueError(f"{path} has no constructor arguments (init_args) for its model")
    try:
        model = classes[meta["class"]](**init_args)
    except TypeError as err:
        raise ValueError(
            f"{path} holds constructor arguments its model does not take: {err}"
        ) from None
    model.load_state_dict(arrays)
    return model


def load_models(models_dir):
    """Every convlab model file in ``models_dir``, by file name (the course's
    ``data_utils.load_models``). Like the course's version it skips a file it cannot load,
    but it names each one in a warning; and it reads .npz model files only: the course's
    pickled model objects are code, which loading never runs."""
    if not os.path.isdir(models_dir):
        raise FileNotFoundError(f"models directory {models_dir} not found")
    models, skipped = {}, []
    for name in sorted(os.listdir(models_dir)):
        path = os.path.join(models_dir, name)
        if not os.path.isfile(path):
            continue
        try:
            models[name] = load_model(path)
        except ValueError as err:
            skipped.append(f"{name} ({err})")
    if skipped:
        import warnings

        warnings.warn(f"load_models skipped what is not a convlab model file: "
                      f"{'; '.join(skipped)}", stacklevel=2)
    return models


def save_arrays(path, arrays, kind):
    """Write named arrays of one ``kind`` (e.g. the weights of a 'LinearSVM') to ``path``,
    atomically, as the assignment-1 classifiers' ``save(fname)`` does."""
    atomic_savez(path, arrays, {"format": "convlab-arrays", "version": 1, "kind": kind})


def load_arrays(path, kind, names):
    """The arrays ``names`` of a file save_arrays wrote for ``kind``; ValueError for a file
    of another kind or without one of them."""
    arrays, meta = load_npz(path)
    if meta.get("format") != "convlab-arrays" or meta.get("kind") != kind:
        raise ValueError(f"{path} does not hold a {kind} (it holds "
                         f"{meta.get('kind') or meta.get('format')!r})")
    missing = [name for name in names if name not in arrays]
    if missing:
        raise ValueError(f"{path} has no {', '.join(missing)}")
    return {name: arrays[name] for name in names}
