"""CIFAR-10, the official "CIFAR-10 python version": find and load.

* :func:`load_CIFAR_batch`, :func:`load_CIFAR10` and :func:`get_CIFAR10_data` keep the
  CS231n names, argument orders and return values.
* :func:`find_CIFAR10_dir` locates the data: an explicit argument, else the ``$CONVLAB_DATA``
  environment variable, else the per-user cache ``$XDG_CACHE_HOME/convlab`` (default
  ``~/.cache/convlab``); each may hold the batches directly or a ``cifar-10-batches-py``
  sub-directory.
* :func:`convlab.data.download.download_CIFAR10` fetches and verifies the archive.

The batches are unpickled by :mod:`convlab.data.safe_pickle`, which refuses every global
except NumPy's array constructors.
"""

import os
from pathlib import Path

import numpy as np

from convlab._checks import check_count, check_float_dtype, check_numeric_dtype
from convlab.data.safe_pickle import safe_load

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIRNAME = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_FILES = CIFAR10_TRAIN_FILES + (CIFAR10_TEST_FILE,)
CIFAR10_CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
DOWNLOAD_COMMAND = 'python -c "from convlab.data_utils import download_CIFAR10; download_CIFAR10()"'

_CIFAR_PIXELS = 3 * 32 * 32
_CIFAR_NUM_CLASSES = 10


def _get_key(d, key):
    if key in d:
        return d[key]
    bkey = key.encode("ascii")
    if bkey in d:
        return d[bkey]
    raise KeyError(key)


def _load_cifar_batch_uint8(filename):
    """Load one batch as ``(X uint8 (N, 32, 32, 3), Y int64 (N,))``; see load_CIFAR_batch."""
    filename = os.fspath(filename)
    expected = (
        "the official CIFAR-10 python format: a pickled dict with b'data' "
        f"(uint8 array of shape (N, {_CIFAR_PIXELS})) and b'labels' (N ints in 0..9)"
    )
    with open(filename, "rb") as f:
        try:
            datadict = safe_load(f)
        except Exception as e:  # corrupt, truncated, or unsafe content
            raise ValueError(
                f"{filename!r} is not a valid CIFAR-10 batch (could not unpickle it: "
                f"{type(e).__name__}: {e}); expected {expected}"
            ) from e
    if not isinstance(datadict, dict):
        raise ValueError(
            f"{filename!r} unpickled to a {type(datadict).__name__}, expected {expected}"
        )
    try:
        data = _get_key(datadict, "data")
        labels = _get_key(datadict, "labels")
    except KeyError as e:
        keys = sorted(repr(k) for k in datadict)
        raise ValueError(
            f"{filename!r} has no {e.args[0]!r} entry (keys: {', '.join(keys)}); "
            f"expected {expected}"
        ) from None

    if isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, dtype=np.uint8)
        if data.size % _CIFAR_PIXELS:
            raise ValueError(
                f"{filename!r}: raw b'data' has {data.size} bytes, not a multiple of "
                f"{_CIFAR_PIXELS}; expected {expected}"
            )
        data = data.reshape(-1, _CIFAR_PIXELS)
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
        shape = getattr(data, "shape", type(data).__name__)
        raise ValueError(f"{filename!r}: b'data' has shape {shape}; expected {expected}")
    if data.dtype != np.uint8:
        if data.dtype.kind not in "iu" or (
            data.size and (data.min() < 0 or data.max() > 255)
        ):
            raise ValueError(
                f"{filename!r}: b'data' has dtype {data.dtype} with values outside 0..255; "
                f"expected {expected}"
            )
        data = data.astype(np.uint8)
    n = data.shape[0]

    try:
        y = np.asarray(labels)
    except Exception as e:
        raise ValueError(
            f"{filename!r}: b'labels' is not a list of ints; expected {expected}"
        ) from e
    if y.ndim != 1 or y.shape[0] != n or (n and y.dtype.kind not in "iu"):
        raise ValueError(
            f"{filename!r}: b'labels' has shape {y.shape} and dtype {y.dtype}, expected {n} "
            f"ints to match b'data'; expected {expected}"
        )
    y = y.astype(np.int64)
    if n and (y.min() < 0 or y.max() >= _CIFAR_NUM_CLASSES):
        raise ValueError(
            f"{filename!r}: labels must lie in 0..{_CIFAR_NUM_CLASSES - 1}, "
            f"found {y.min()}..{y.max()}"
        )
    X = data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)
    return X, y


def load_CIFAR_batch(filename, dtype=np.float32):
    """Load a single batch file of the official CIFAR-10 python version.

    Inputs:
    - filename: path of a batch (``data_batch_1`` ... ``data_batch_5`` or ``test_batch``): a
      pickled dict with ``b'data'`` (uint8 ``(N, 3072)``, channel-major rows) and
      ``b'labels'`` (N ints in 0..9). Any N is accepted (the official files have N = 10000).
    - dtype: dtype of the returned images (default float32; uint8 saves memory).

    Returns:
    - X: ``(N, 32, 32, 3)`` array of ``dtype`` with pixel values in 0..255.
    - Y: ``(N,)`` int64 labels.

    The file is unpickled by a restricted unpickler that refuses every global other than the
    NumPy array constructors the format uses, so a malicious pickle cannot run code; still,
    load only archives from a trusted source.

    Raises FileNotFoundError if the file does not exist, ValueError (naming the file and the
    expected format) if it is truncated, corrupt, unsafe, or has missing or malformed entries.
    """
    dt = check_numeric_dtype(dtype)
    X, Y = _load_cifar_batch_uint8(filename)
    return X.astype(dt), Y


def missing_cifar_files(directory):
    """The names of the CIFAR-10 batch files that ``directory`` lacks ([] when complete)."""
    directory = Path(directory)
    return [name for name in CIFAR10_FILES if not (directory / name).is_file()]


def load_CIFAR10(ROOT, dtype=np.float32):
    """Load all of CIFAR-10 from a ``cifar-10-batches-py`` directory.

    Inputs:
    - ROOT: directory holding ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``.
    - dtype: dtype of the returned images (default float32).

    Returns ``Xtr (N_train, 32, 32, 3)``, ``Ytr (N_train,)``, ``Xte (N_test, 32, 32, 3)``,
    ``Yte (N_test,)``; with the official files N_train = 50000 and N_test = 10000. Labels are
    int64, images have values 0..255.

    Raises FileNotFoundError (saying where it looked and how to download the data) if any
    batch file is missing, ValueError if a batch is corrupt.
    """
    dt = check_numeric_dtype(dtype)
    root = Path(os.fspath(ROOT))
    missing = missing_cifar_files(root)
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 batches not found: looked in {str(root)!r}, missing "
            f"{', '.join(missing)}. Download the dataset with:\n    {DOWNLOAD_COMMAND}"
        )
    xs, ys = [], []
    for name in CIFAR10_TRAIN_FILES:
        X, Y = _load_cifar_batch_uint8(root / name)
        xs.append(X)
        ys.append(Y)
    Xtr = np.concatenate(xs).astype(dt, copy=False)
    Ytr = np.concatenate(ys)
    del xs
    Xte, Yte = _load_cifar_batch_uint8(root / CIFAR10_TEST_FILE)
    return Xtr, Ytr, Xte.astype(dt), Yte


def _user_cache_dir():
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "convlab"


def default_data_dir():
    """Directory datasets are downloaded to by default.

    ``$CONVLAB_DATA`` if set, else ``$XDG_CACHE_HOME/convlab`` (``~/.cache/convlab`` when
    ``XDG_CACHE_HOME`` is unset). Returns a str; the directory may not exist yet.
    """
    env = os.environ.get("CONVLAB_DATA")
    if env:
        return str(Path(env).expanduser())
    return str(_user_cache_dir())


def find_CIFAR10_dir(cifar10_dir=None):
    """Return the path (str) of a complete ``cifar-10-batches-py`` directory.

    Search order: ``cifar10_dir`` if given (only that place is searched), else
    ``$CONVLAB_DATA`` if set, then the course's layouts relative to the working directory
    (``cs231n/datasets`` and ``datasets``, where assignment notebooks keep the data), then
    the per-user cache ``$XDG_CACHE_HOME/convlab`` (default ``~/.cache/convlab``). Each
    place may hold the batch files directly or a ``cifar-10-batches-py`` sub-directory.

    Raises FileNotFoundError listing every place looked and the command that downloads the
    data.
    """
    if cifar10_dir is not None:
        bases = [("argument cifar10_dir", Path(os.fspath(cifar10_dir)).expanduser())]
    else:
        bases = []
        env = os.environ.get("CONVLAB_DATA")
        if env:
            bases.append(("$CONVLAB_DATA", Path(env).expanduser()))
        bases += [("course layout", Path("cs231n", "datasets").absolute()),
                  ("course layout", Path("datasets").absolute()),
                  ("user cache", _user_cache_dir())]
    looked = []
    for label, base in bases:
        for cand in (base / CIFAR10_DIRNAME, base):
            missing = missing_cifar_files(cand)
            if not missing:
                return str(cand)
            if cand.is_dir() and len(missing) < len(CIFAR10_FILES):
                looked.append(f"{cand} ({label}; incomplete, missing {', '.join(missing)})")
            else:
                looked.append(f"{cand} ({label})")
    raise FileNotFoundError(
        "CIFAR-10 (python version) not found. Looked in:\n  "
        + "\n  ".join(looked)
        + "\nDownload it (about 163 MB) with:\n    "
        + DOWNLOAD_COMMAND
        + "\nor set $CONVLAB_DATA to a directory containing cifar-10-batches-py."
    )


def get_CIFAR10_data(
    num_training=49000,
    num_validation=1000,
    num_test=1000,
    subtract_mean=True,
    cifar10_dir=None,
    dtype=np.float32,
):
    """Load CIFAR-10 and prepare it for classifiers (the CS231n recipe).

    Training examples are the first ``num_training`` of the 50000, validation the
    ``num_validation`` examples right after them, test the first ``num_test`` of the test set.
    With ``subtract_mean`` the mean image of the training split is subtracted from every split.
    The data directory is found with :func:`find_CIFAR10_dir(cifar10_dir) <find_CIFAR10_dir>`.

    Returns a dict with ``X_train (num_training, 3, 32, 32)``, ``y_train (num_training,)``,
    ``X_val (num_validation, 3, 32, 32)``, ``y_val``, ``X_test (num_test, 3, 32, 32)``,
    ``y_test``; images are C-contiguous arrays of ``dtype`` (default float32), labels int64.

    Raises FileNotFoundError if the data cannot be found, ValueError for negative counts or
    counts larger than the data available, TypeError for a non-float dtype.
    """
    dt = check_float_dtype(dtype)
    num_training = check_count("num_training", num_training)
    num_validation = check_count("num_validation", num_validation)
    num_test = check_count("num_test", num_test)
    if subtract_mean and num_training == 0:
        raise ValueError("subtract_mean=True needs num_training >= 1 to compute the mean image")

    root = find_CIFAR10_dir(cifar10_dir)
    Xtr, Ytr, Xte, Yte = load_CIFAR10(root, dtype=np.uint8)
    if num_training + num_validation > Xtr.shape[0]:
        raise ValueError(
            f"num_training + num_validation = {num_training + num_validation} exceeds the "
            f"{Xtr.shape[0]} training images available in {root}"
        )
    if num_test > Xte.shape[0]:
        raise ValueError(
            f"num_test = {num_test} exceeds the {Xte.shape[0]} test images available in {root}"
        )

    X_train = Xtr[:num_training].astype(dt)
    X_val = Xtr[num_training:num_training + num_validation].astype(dt)
    X_test = Xte[:num_test].astype(dt)
    y_train = Ytr[:num_training].copy()
    y_val = Ytr[num_training:num_training + num_validation].copy()
    y_test = Yte[:num_test].copy()
    del Xtr, Xte

    if subtract_mean:
        mean_image = np.mean(X_train, axis=0, dtype=np.float64).astype(dt)
        X_train -= mean_image
        X_val -= mean_image
        X_test -= mean_image

    def nchw(X):
        return np.ascontiguousarray(X.transpose(0, 3, 1, 2))

    return {
        "X_train": nchw(X_train),
        "y_train": y_train,
        "X_val": nchw(X_val),
        "y_val": y_val,
        "X_test": nchw(X_test),
        "y_test": y_test,
    }
