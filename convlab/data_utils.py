"""Dataset loading, preprocessing and augmentation.

CIFAR-10 (the official "CIFAR-10 python version"):

* :func:`load_CIFAR_batch`, :func:`load_CIFAR10` and :func:`get_CIFAR10_data` keep the
  CS231n names, argument orders and return values.
* :func:`find_CIFAR10_dir` locates the data: an explicit argument, else the ``$CONVLAB_DATA``
  environment variable, else the per-user cache ``$XDG_CACHE_HOME/convlab`` (default
  ``~/.cache/convlab``); each may hold the batches directly or a ``cifar-10-batches-py``
  sub-directory.
* :func:`download_CIFAR10` fetches and verifies the official archive.

The official batches are Python pickles.  Unpickling can run arbitrary code, so this module
unpickles them with a restricted unpickler that refuses every global except the handful of
NumPy array constructors the format needs; even so, only use archives from a source you trust
(ideally the official one, checked against its published MD5 by :func:`download_CIFAR10`).

Image folders: :func:`load_image_folder` reads ``root/<class>/<image>`` trees (or a
``.tar``/``.tar.gz`` of one) into a uint8 array; :func:`split_per_class` holds out a fixed number
of images per class; :func:`preprocess_images` turns uint8 ``(N, H, W, C)`` images into
normalised float ``(N, C, H, W)`` arrays.

Offline data: :func:`load_builtin_dataset` / :func:`make_builtin_images` generate a
deterministic 10-class dataset of 32x32 RGB images of shapes and textures that needs no download.

Augmentation: :func:`random_crop_flip`, :func:`random_crop` and :func:`random_flip` work on whole
``(N, C, H, W)`` batches without a Python loop over images and take an explicit
``np.random.Generator``.

No function here touches NumPy's global random state or keeps module-level mutable state.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

import numpy as np

__all__ = [
    "BUILTIN_CLASS_NAMES",
    "CIFAR10_CLASS_NAMES",
    "CIFAR10_DIRNAME",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DOWNLOAD_COMMAND",
    "IMG_EXTENSIONS",
    "default_data_dir",
    "download_CIFAR10",
    "find_CIFAR10_dir",
    "get_CIFAR10_data",
    "load_CIFAR10",
    "load_CIFAR_batch",
    "load_builtin_dataset",
    "load_image_folder",
    "make_builtin_images",
    "preprocess_images",
    "random_crop",
    "random_crop_flip",
    "random_flip",
    "split_per_class",
]

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

#: File-name suffixes recognised as images by :func:`load_image_folder` (case-insensitive).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")

_CIFAR_PIXELS = 3 * 32 * 32
_CIFAR_NUM_CLASSES = 10


# ---------------------------------------------------------------------------------------------
# Small argument helpers
# ---------------------------------------------------------------------------------------------

def _check_count(name, value, allow_zero=True):
    """Return ``value`` as an int, raising TypeError/ValueError unless it is a valid count."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def _check_numeric_dtype(dtype):
    dt = np.dtype(dtype)
    if dt.kind not in "fiu":
        raise TypeError(f"dtype must be a numeric (float/int) dtype, got {dt}")
    return dt


def _check_float_dtype(dtype):
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"dtype must be a floating-point dtype, got {dt}")
    return dt


# ---------------------------------------------------------------------------------------------
# Restricted unpickling of the official CIFAR batches
# ---------------------------------------------------------------------------------------------

def _reconstruct_function():
    # numpy.core.multiarray._reconstruct (NumPy 1.x) / numpy._core.multiarray._reconstruct (2.x)
    return np.zeros(0).__reduce__()[0]


def _frombuffer_function():
    # numpy.core.numeric._frombuffer, used by protocol-5 pickles of contiguous arrays
    return np.zeros(1).__reduce_ex__(5)[0]


def _scalar_function():
    # numpy.core.multiarray.scalar, used for pickled NumPy scalars
    return np.float64(0).__reduce__()[0]


_SAFE_DTYPES = frozenset(
    "b1 i1 u1 i2 u2 i4 u4 i8 u8 f2 f4 f8 bool int8 uint8 int16 uint16 int32 uint32 int64 "
    "uint64 float16 float32 float64".split()
)


def _safe_dtype(spec, *args):
    """``numpy.dtype`` restricted to plain numeric dtypes (never ``object``)."""
    if isinstance(spec, bytes):
        spec = spec.decode("ascii", "replace")
    if not isinstance(spec, str) or spec not in _SAFE_DTYPES:
        raise pickle.UnpicklingError(f"refusing to unpickle NumPy dtype {spec!r}")
    return np.dtype(spec, *args)


def _safe_codecs_encode(obj, encoding="utf-8", *args):
    # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, 'latin1').
    if not isinstance(obj, str) or str(encoding).lower().replace("_", "-") not in (
        "latin1", "latin-1", "iso-8859-1",
    ):
        raise pickle.UnpicklingError("refusing _codecs.encode call other than latin-1 bytes")
    return obj.encode("latin-1")


def _safe_globals():
    reconstruct = _reconstruct_function()
    frombuffer = _frombuffer_function()
    scalar = _scalar_function()
    table = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _safe_dtype,
        ("_codecs", "encode"): _safe_codecs_encode,
    }
    for mod in ("numpy.core", "numpy._core"):
        table[(f"{mod}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{mod}.multiarray", "scalar")] = scalar
        table[(f"{mod}.numeric", "_frombuffer")] = frombuffer
    return table


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the NumPy array constructors used by CIFAR batches.

    Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) raises
    :class:`pickle.UnpicklingError`, so no code named in the pickle can ever be called.
    """

    def __init__(self, file):
        super().__init__(file, encoding="bytes")
        self._allowed = _safe_globals()

    def find_class(self, module, name):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: only NumPy arrays, lists, "
                "dicts, bytes, str and ints are allowed in a CIFAR batch"
            ) from None


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
            datadict = _RestrictedUnpickler(f).load()
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
    dt = _check_numeric_dtype(dtype)
    X, Y = _load_cifar_batch_uint8(filename)
    return X.astype(dt), Y


def _missing_cifar_files(directory):
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
    dt = _check_numeric_dtype(dtype)
    root = Path(os.fspath(ROOT))
    missing = _missing_cifar_files(root)
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


# ---------------------------------------------------------------------------------------------
# Locating and downloading CIFAR-10
# ---------------------------------------------------------------------------------------------

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
    ``$CONVLAB_DATA`` if set, then the per-user cache ``$XDG_CACHE_HOME/convlab`` (default
    ``~/.cache/convlab``). Each place may hold the batch files directly or a
    ``cifar-10-batches-py`` sub-directory.

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
        bases.append(("user cache", _user_cache_dir()))
    looked = []
    for label, base in bases:
        for cand in (base / CIFAR10_DIRNAME, base):
            missing = _missing_cifar_files(cand)
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
    dt = _check_float_dtype(dtype)
    num_training = _check_count("num_training", num_training)
    num_validation = _check_count("num_validation", num_validation)
    num_test = _check_count("num_test", num_test)
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


def _stream_download(url, out, progress, timeout, chunk_size=1 << 16):
    """Copy ``url`` into the binary file ``out``; return the hex MD5 of the bytes written."""
    from tqdm import tqdm

    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("https", "http", "file"):
        raise ValueError(f"unsupported URL scheme {scheme!r} in {url!r}; expected https")
    digest = hashlib.md5(usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": "convlab-data-utils"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        name = PurePosixPath(urllib.parse.urlsplit(url).path).name or "download"
        with tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
            disable=not progress,
        ) as bar:
            received = 0
            while True:
                chunk = response.read(chunk_size)
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received != total:
            raise OSError(f"download of {url} truncated: got {received} of {total} bytes")
    return digest.hexdigest()


def _safe_extract(archive, dest):
    """Extract a tar archive into ``dest`` refusing absolute paths, ``..`` and non-regular files."""
    try:
        tf = tarfile.open(archive, "r:*")
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(f"{archive} is not a readable tar archive: {e}") from e
    with tf:
        try:
            members = tf.getmembers()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ValueError(f"{archive} is a corrupt tar archive: {e}") from e
        for m in members:
            p = PurePosixPath(m.name)
            if p.is_absolute() or m.name.startswith(("/", "\\")) or ".." in p.parts or (
                ":" in (p.parts[0] if p.parts else "")
            ):
                raise ValueError(f"refusing to extract unsafe path {m.name!r} from {archive}")
            if not (m.isfile() or m.isdir()):
                raise ValueError(
                    f"refusing to extract {m.name!r} from {archive}: only regular files and "
                    "directories are allowed (no links or devices)"
                )
        if hasattr(tarfile, "data_filter"):
            tf.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - Python without extraction filters; members checked above
            tf.extractall(dest, members=members)


def download_CIFAR10(dest=None, url=CIFAR10_URL, md5=CIFAR10_MD5, progress=True, timeout=60):
    """Download and unpack the official CIFAR-10 python version into ``dest``.

    Inputs:
    - dest: parent directory (created if needed); default :func:`default_data_dir`
      (``$CONVLAB_DATA``, else ``~/.cache/convlab``).
    - url: archive URL (default the official HTTPS address; tests point it at a local server).
    - md5: expected hex MD5 of the archive (default the published one); None skips the check.
    - progress: show a tqdm progress bar.
    - timeout: socket timeout in seconds.

    The archive is streamed to a temporary file beside ``dest``, its MD5 verified, extracted
    (rejecting absolute paths, ``..`` members and links) into a temporary directory beside
    ``dest``, and the ``cifar-10-batches-py`` directory is then renamed into place atomically,
    so an interrupted download never leaves a partial dataset behind. If
    ``dest/cifar-10-batches-py`` already holds every batch nothing is downloaded.

    Returns the path (str) of ``dest/cifar-10-batches-py``.

    Raises ValueError on an MD5 mismatch (the downloaded file is removed) or a malformed
    archive, OSError (e.g. urllib.error.URLError) on network failures.
    """
    dest = Path(os.fspath(dest)).expanduser() if dest is not None else Path(default_data_dir())
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / CIFAR10_DIRNAME
    if not _missing_cifar_files(final):
        return str(final)

    fd, tmp_archive = tempfile.mkstemp(prefix=".cifar-10-python-", suffix=".part", dir=dest)
    tmp_dir = None
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _stream_download(url, out, progress, timeout)
        if md5 is not None and digest != md5.lower():
            raise ValueError(
                f"MD5 mismatch for {url}: expected {md5.lower()}, got {digest}; the download "
                "was corrupted or the file is not the official archive (it has been removed)"
            )
        tmp_dir = tempfile.mkdtemp(prefix=".cifar-10-extract-", dir=dest)
        _safe_extract(tmp_archive, tmp_dir)
        extracted = Path(tmp_dir) / CIFAR10_DIRNAME
        missing = _missing_cifar_files(extracted)
        if missing:
            raise ValueError(
                f"archive from {url} has no complete {CIFAR10_DIRNAME}/ directory "
                f"(missing {', '.join(missing)})"
            )
        if final.exists() or final.is_symlink():
            # An incomplete earlier copy: move it aside, then replace it.
            stale = Path(tmp_dir) / "stale"
            os.replace(final, stale)
        try:
            os.replace(extracted, final)
        except OSError:
            if _missing_cifar_files(final):  # not a concurrent download that won the race
                raise
    finally:
        if os.path.exists(tmp_archive):
            os.remove(tmp_archive)
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return str(final)


# ---------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------

def _is_image_name(name):
    return name.lower().endswith(IMG_EXTENSIONS)


def _skip_part(part):
    return part.startswith(".") or part == "__MACOSX"


def _collect_from_dir(root):
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not _skip_part(d)]
        rel = Path(dirpath).relative_to(root).parts
        for fn in filenames:
            if _skip_part(fn) or not _is_image_name(fn):
                continue
            full = os.path.join(dirpath, fn)
            entries.append((rel + (fn,), full))
    return entries


def _collect_from_tar(path):
    """Read every image member of a tar archive into memory: list of (parts, bytes)."""
    entries = []
    try:
        with tarfile.open(path, "r|*") as tf:  # streaming: one sequential pass
            for m in tf:
                if not m.isfile():
                    continue
                parts = tuple(p for p in PurePosixPath(m.name).parts if p not in ("", ".", "/"))
                if not parts or any(_skip_part(p) for p in parts) or ".." in parts:
                    continue
                if not _is_image_name(parts[-1]):
                    continue
                f = tf.extractfile(m)
                entries.append((parts, f.read()))
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(f"{path} is not a readable tar archive: {e}") from e
    return entries


def _resolve_layout(entries, source):
    """Map ``(parts, payload)`` entries to ``(class_name, display_name, payload)``."""
    depths = {len(parts) for parts, _ in entries}
    if len(depths) > 1:
        by_depth = {}
        for parts, _ in entries:
            by_depth.setdefault(len(parts), "/".join(parts))
        examples = ", ".join(repr(v) for _, v in sorted(by_depth.items()))
        raise ValueError(
            f"images in {source} lie at different depths (e.g. {examples}); expected every "
            "image at <root>/<class>/<image>"
        )
    depth = depths.pop()
    if depth < 2:
        raise ValueError(
            f"images found directly in {source} (e.g. {'/'.join(entries[0][0])!r}); expected "
            "one sub-directory per class: <root>/<class>/<image>"
        )
    prefixes = {parts[:-2] for parts, _ in entries}
    if len(prefixes) > 1:
        examples = ", ".join(repr("/".join(p) or ".") for p in sorted(prefixes)[:3])
        raise ValueError(
            f"class directories in {source} sit under different parent directories "
            f"({examples}); expected a single <root>/<class>/<image> tree"
        )
    return [(parts[-2], "/".join(parts), payload) for parts, payload in entries]


def _decode_image(payload, display, source, size):
    from PIL import Image

    try:
        data = payload if isinstance(payload, bytes) else Path(payload).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            out = im if im.mode == "RGB" else im.convert("RGB")
            if size is not None and out.size != (size[1], size[0]):
                out = out.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(out, dtype=np.uint8)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        raise ValueError(
            f"cannot read image {display!r} in {source}: {type(e).__name__}: {e}"
        ) from e


def load_image_folder(path, image_size=None):
    """Load a ``root/<class>/<image>`` tree of images (like torchvision's ImageFolder).

    Inputs:
    - path: a directory, or a ``.tar`` / ``.tar.gz`` / ``.tgz`` (any tarfile compression)
      holding such a tree; archives are read in memory, never extracted to disk. The class
      directories may sit under a common top directory (e.g. ``train/<class>/0001.jpg``): the
      class of an image is the directory that directly contains it, and every image must lie
      at the same depth under a single common parent.
    - image_size: optional ``(H, W)``; every image is resized (bilinear) to it. Without it all
      images must already have the same size.

    Images are files ending in one of :data:`IMG_EXTENSIONS` (case-insensitive); other files
    and hidden files/directories are ignored. Images are converted to RGB.

    Returns:
    - X: ``(N, H, W, 3)`` uint8.
    - y: ``(N,)`` int64 class indices.
    - class_names: list of str; class ``i`` is ``class_names[i]``, the folder names sorted as
      strings (as in torchvision ImageFolder). Images are ordered by class, then by file name.

    Raises FileNotFoundError if ``path`` does not exist; ValueError if no images are found,
    the layout is not ``<class>/<image>``, an image cannot be decoded (naming the file) or
    sizes differ without ``image_size`` (naming the odd file).
    """
    source = os.fspath(path)
    if image_size is not None:
        try:
            H, W = (int(v) for v in image_size)
        except (TypeError, ValueError):
            raise TypeError(
                f"image_size must be a (H, W) pair of ints, got {image_size!r}"
            ) from None
        if H <= 0 or W <= 0:
            raise ValueError(f"image_size must be positive, got {image_size!r}")
        image_size = (H, W)
    p = Path(source)
    if not p.exists():
        raise FileNotFoundError(f"image folder or archive not found: {source!r}")
    if p.is_dir():
        entries = _collect_from_dir(p)
    elif tarfile.is_tarfile(p):
        entries = _collect_from_tar(p)
    else:
        raise ValueError(
            f"{source!r} is neither a directory nor a tar archive (.tar, .tar.gz, .tgz)"
        )
    if not entries:
        raise ValueError(
            f"no image files ({', '.join(IMG_EXTENSIONS)}) found in {source!r}; expected "
            "<root>/<class>/<image>"
        )
    items = _resolve_layout(entries, repr(source))
    items.sort(key=lambda t: (t[0], t[1]))
    class_names = sorted({c for c, _, _ in items})
    class_index = {c: i for i, c in enumerate(class_names)}
    n = len(items)
    y = np.fromiter((class_index[c] for c, _, _ in items), dtype=np.int64, count=n)

    X = None
    first_name = None
    for i, (_, display, payload) in enumerate(items):
        arr = _decode_image(payload, display, repr(source), image_size)
        if X is None:
            X = np.empty((n,) + arr.shape, dtype=np.uint8)
            first_name = display
        elif arr.shape != X.shape[1:]:
            raise ValueError(
                f"image {display!r} in {source!r} has size {arr.shape[1]}x{arr.shape[0]} "
                f"(WxH) but {first_name!r} has {X.shape[2]}x{X.shape[1]}; pass "
                "image_size=(H, W) to resize all images"
            )
        X[i] = arr
        items[i] = None  # release the encoded bytes as we go
    return X, y, class_names


def split_per_class(X, y, num_val_per_class):
    """Hold out the last ``num_val_per_class`` examples of every class for validation.

    Inputs: ``X (N, ...)``, ``y (N,)`` integer labels, ``num_val_per_class`` int >= 0.
    "Last" follows the order of ``X``; both outputs keep that relative order.

    Returns ``X_train (N - K*V, ...)``, ``y_train``, ``X_val (K*V, ...)``, ``y_val`` for K
    classes and V = ``num_val_per_class`` (e.g. 45000 / 5000 for CIFAR-10 with V = 500).

    Raises ValueError if shapes disagree or a class has no more than V examples (it would leave
    no training example of that class).
    """
    X = np.asarray(X)
    y = np.asarray(y)
    v = _check_count("num_val_per_class", num_val_per_class)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (N,), got shape {y.shape}")
    if y.size and y.dtype.kind not in "iu":
        raise TypeError(f"y must hold integer labels, got dtype {y.dtype}")
    if X.ndim < 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"X has {X.shape[0] if X.ndim else 0} examples but y has {y.shape[0]}")
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if v and np.any(counts <= v):
        bad = classes[counts <= v]
        raise ValueError(
            f"class(es) {bad.tolist()} have only {counts[counts <= v].tolist()} examples; "
            f"need more than num_val_per_class={v}"
        )
    order = np.argsort(inverse, kind="stable")
    rank = np.empty(y.shape[0], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank[order] = np.arange(y.shape[0]) - np.repeat(starts, counts)
    from_end = counts[inverse] - 1 - rank
    val = from_end < v
    return X[~val], y[~val], X[val], y[val]


def _channel_stats(X, chunk=4096):
    """Per-channel mean and std of ``X (N, H, W, C)`` scaled to [0, 1], in float64."""
    c = X.shape[-1]
    if X.dtype == np.uint8:  # exact and fast: per-channel histograms
        values = np.arange(256, dtype=np.float64)
        hist = np.stack([np.bincount(X[..., k].ravel(), minlength=256) for k in range(c)])
        count = hist.sum(axis=1)
        mean = hist @ values / count
        var = hist @ values**2 / count - mean**2
        return mean / 255.0, np.sqrt(np.maximum(var, 0.0)) / 255.0
    s = np.zeros(c)
    ss = np.zeros(c)
    for start in range(0, X.shape[0], chunk):
        xb = X[start:start + chunk].astype(np.float64)
        s += xb.sum(axis=(0, 1, 2))
        ss += np.square(xb).sum(axis=(0, 1, 2))
    count = X.shape[0] * X.shape[1] * X.shape[2]
    mean = s / count
    var = np.maximum(ss / count - mean**2, 0.0)
    return mean / 255.0, np.sqrt(var) / 255.0


def preprocess_images(X, mean=None, std=None, dtype=np.float32):
    """Normalise uint8 images for a network.

    Inputs:
    - X: ``(N, H, W, C)`` images with values in 0..255 (uint8, or any real dtype).
    - mean, std: per-channel ``(C,)`` statistics on the [0, 1] scale. When None they are
      computed from ``X`` (pass the training-set values when processing validation/test data).
      A zero std is replaced by 1.
    - dtype: floating-point dtype of the output (default float32).

    Returns ``(X_out (N, C, H, W) of dtype, mean (C,), std (C,))`` with
    ``X_out = (X / 255 - mean) / std`` per channel.
    """
    dt = _check_float_dtype(dtype)
    X = np.asarray(X)
    if X.ndim != 4:
        raise ValueError(f"X must be (N, H, W, C) images, got shape {X.shape}")
    if X.dtype.kind not in "iuf":
        raise TypeError(f"X must have a numeric dtype, got {X.dtype}")
    N, H, W, C = X.shape
    if mean is None or std is None:
        if N == 0:
            raise ValueError("cannot compute mean/std of an empty array; pass mean and std")
        m, s = _channel_stats(X)
        mean = m if mean is None else mean
        std = s if std is None else std
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    std = np.asarray(std, dtype=np.float64).reshape(-1)
    if mean.shape != (C,) or std.shape != (C,):
        raise ValueError(
            f"mean and std must have shape ({C},) for {C}-channel images, "
            f"got {mean.shape} and {std.shape}"
        )
    std = np.where(std > 0, std, 1.0)
    scale = (1.0 / (255.0 * std)).astype(dt)
    shift = (mean / std).astype(dt)
    out = np.empty((N, C, H, W), dtype=dt)
    chunk = 4096
    for start in range(0, N, chunk):
        ob = out[start:start + chunk]
        ob[...] = X[start:start + chunk].transpose(0, 3, 1, 2)
        ob *= scale[:, None, None]
        ob -= shift[:, None, None]
    return out, mean.astype(dt), std.astype(dt)


# ---------------------------------------------------------------------------------------------
# Built-in procedural dataset
# ---------------------------------------------------------------------------------------------

BUILTIN_CLASS_NAMES = (
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "horizontal_stripes",
    "vertical_stripes",
    "diagonal_stripes",
    "checkerboard",
    "dots",
)

_BUILTIN_SIZE = 32


def _builtin_masks(label, rng, n, yy, xx):
    """Boolean foreground masks ``(n, S, S)`` for ``n`` images of class ``label``."""
    S = _BUILTIN_SIZE
    if label <= 4:  # shapes at random positions and sizes
        r = rng.uniform(6.0, 11.0, n)[:, None, None]
        cx = rng.uniform(r[:, 0, 0], S - r[:, 0, 0])[:, None, None]
        cy = rng.uniform(r[:, 0, 0], S - r[:, 0, 0])[:, None, None]
        dx = xx - cx
        dy = yy - cy
        if label == 0:  # circle (filled disk)
            return dx**2 + dy**2 <= r**2
        if label == 1:  # square
            h = r * 0.85
            return (np.abs(dx) <= h) & (np.abs(dy) <= h)
        if label == 2:  # triangle, apex up or down
            flip = np.where(rng.random(n) < 0.5, 1.0, -1.0)[:, None, None]
            t = dy * flip
            return (np.abs(t) <= r) & (np.abs(dx) <= (t + r) * 0.55)
        if label == 3:  # plus-shaped cross
            w = np.maximum(r * 0.3, 1.6)
            return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
        # ring
        d2 = dx**2 + dy**2
        return (d2 <= r**2) & (d2 >= (r * 0.55) ** 2)

    # textures over the whole image with random period and phase
    period = rng.uniform(4.0, 9.0, n)[:, None, None]
    phase = rng.uniform(0.0, 2 * np.pi, n)[:, None, None]
    k = 2 * np.pi / period
    if label == 5:
        return np.sin(k * yy + phase) > 0
    if label == 6:
        return np.sin(k * xx + phase) > 0
    if label == 7:
        sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)[:, None, None]
        return np.sin(k * (xx + sign * yy) / np.sqrt(2.0) + phase) > 0
    if label == 8:
        phase2 = rng.uniform(0.0, 2 * np.pi, n)[:, None, None]
        return np.sin(k * xx + phase) * np.sin(k * yy + phase2) > 0
    # dots on a regular grid
    p = rng.uniform(6.0, 10.0, n)[:, None, None]
    ox = rng.uniform(0.0, p[:, 0, 0])[:, None, None]
    oy = rng.uniform(0.0, p[:, 0, 0])[:, None, None]
    fx = np.mod(xx + ox, p) - p / 2
    fy = np.mod(yy + oy, p) - p / 2
    return fx**2 + fy**2 <= (p * 0.3) ** 2


def make_builtin_images(n, seed=0):
    """Generate the raw images of the built-in offline dataset.

    ``n`` 32x32 RGB images of the 10 classes in :data:`BUILTIN_CLASS_NAMES` (five shapes at
    random positions and sizes, five full-image textures with random period and phase), each
    drawn in a random foreground colour on a random contrasting background with pixel noise and
    a random brightness gradient, so colour alone carries no class information. Labels are
    shuffled in aligned blocks of 10: ``y[10*k:10*k+10]`` holds every class once, so the
    classes are balanced (counts differ by at most one) in any split at a multiple of 10. The
    output depends only on ``n`` and
    ``seed`` (a ``np.random.default_rng`` seed; NumPy's global RNG is never used).

    Returns ``X (n, 32, 32, 3)`` uint8 and ``y (n,)`` int64.
    """
    n = _check_count("n", n)
    rng = np.random.default_rng(seed)
    S = _BUILTIN_SIZE
    K = len(BUILTIN_CLASS_NAMES)
    # each aligned block of K labels is a random permutation of the classes, so any split at
    # a multiple of K (e.g. 5000 / 500 / 500) is exactly balanced
    blocks = -(-n // K)
    y = rng.permuted(np.tile(np.arange(K, dtype=np.int64), (blocks, 1)), axis=1).ravel()[:n]
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float64) + 0.5

    mask = np.zeros((n, S, S), dtype=bool)
    for label in range(K):
        idx = np.flatnonzero(y == label)
        if idx.size:
            mask[idx] = _builtin_masks(label, rng, idx.size, yy, xx)

    bg = rng.uniform(0.0, 255.0, (n, 3))
    # foreground differs from the background by 64..192 in every channel (mod 256)
    fg = np.mod(bg + 128.0 + rng.uniform(-64.0, 64.0, (n, 3)), 256.0)
    img = np.where(mask[..., None], fg[:, None, None, :], bg[:, None, None, :]).astype(np.float32)
    # random linear brightness gradient and Gaussian pixel noise
    gdir = rng.uniform(0.0, 2 * np.pi, n)
    gamp = rng.uniform(0.0, 40.0, n)
    grad = (np.cos(gdir)[:, None, None] * (xx - S / 2) + np.sin(gdir)[:, None, None] * (yy - S / 2))
    img += (gamp[:, None, None] / S * grad)[..., None].astype(np.float32)
    img += rng.normal(0.0, 18.0, img.shape).astype(np.float32)
    X = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return X, y


def load_builtin_dataset(num_train=5000, num_val=500, num_test=500, seed=0, dtype=np.float32):
    """A small 10-class image dataset that needs no download (see :func:`make_builtin_images`).

    ``num_train + num_val + num_test`` images are generated from ``seed`` and split in that
    order; all splits are normalised with the per-channel mean/std of the training split
    (:func:`preprocess_images`). A linear classifier on the pixels does poorly on it while a
    small ConvNet does well, because the classes differ in spatial structure, not colour.

    Returns a dict with ``X_train (num_train, 3, 32, 32)``, ``y_train (num_train,)``,
    ``X_val``, ``y_val``, ``X_test``, ``y_test`` (images of ``dtype``, labels int64),
    ``class_names`` (list of 10 str), and the normalisation statistics ``mean`` and ``std``
    (``(3,)`` arrays on the [0, 1] scale).
    """
    dt = _check_float_dtype(dtype)
    num_train = _check_count("num_train", num_train, allow_zero=False)
    num_val = _check_count("num_val", num_val)
    num_test = _check_count("num_test", num_test)
    X, y = make_builtin_images(num_train + num_val + num_test, seed)
    a, b = num_train, num_train + num_val
    X_train, mean, std = preprocess_images(X[:a], dtype=dt)
    X_val, _, _ = preprocess_images(X[a:b], mean, std, dtype=dt)
    X_test, _, _ = preprocess_images(X[b:], mean, std, dtype=dt)
    return {
        "X_train": X_train,
        "y_train": y[:a],
        "X_val": X_val,
        "y_val": y[a:b],
        "X_test": X_test,
        "y_test": y[b:],
        "class_names": list(BUILTIN_CLASS_NAMES),
        "mean": mean,
        "std": std,
    }


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------

def _check_batch(X, rng):
    if not isinstance(X, np.ndarray) or X.ndim != 4:
        raise ValueError(
            f"X must be a (N, C, H, W) array, got {getattr(X, 'shape', type(X).__name__)}"
        )
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator (e.g. np.random.default_rng(0)), "
            f"got {type(rng).__name__}"
        )


def random_crop_flip(X, rng, pad=4, flip=True):
    """Random translation by padded cropping, plus random horizontal flips.

    Inputs:
    - X: ``(N, C, H, W)`` batch.
    - rng: ``np.random.Generator`` supplying all randomness.
    - pad: zero padding added on each side; each image is cropped back to ``H x W`` at an
      offset drawn uniformly from ``0..2*pad`` in each direction.
    - flip: if True each image is mirrored left-right with probability 0.5.

    Returns a new ``(N, C, H, W)`` array of X's dtype (X is not modified). Vectorised: one
    fancy-indexing gather, no Python loop over images.
    """
    _check_batch(X, rng)
    pad = _check_count("pad", pad)
    N, C, H, W = X.shape
    oy = rng.integers(0, 2 * pad + 1, size=N)
    ox = rng.integers(0, 2 * pad + 1, size=N)
    flips = rng.random(N) < 0.5 if flip else np.zeros(N, dtype=bool)
    src = np.pad(X, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else X
    rows = oy[:, None] + np.arange(H)  # (N, H)
    cols = ox[:, None] + np.arange(W)  # (N, W)
    cols = np.where(flips[:, None], cols[:, ::-1], cols)
    n_idx = np.arange(N)[:, None, None, None]
    c_idx = np.arange(C)[None, :, None, None]
    return src[n_idx, c_idx, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop(X, rng, pad=4):
    """Random padded crop of each image of ``X (N, C, H, W)``; no flips. Same shape and dtype."""
    return random_crop_flip(X, rng, pad=pad, flip=False)


def random_flip(X, rng):
    """Mirror each image of ``X (N, C, H, W)`` left-right with probability 0.5.

    Returns a new array of the same shape and dtype; ``rng`` is a ``np.random.Generator``.
    """
    _check_batch(X, rng)
    flips = rng.random(X.shape[0]) < 0.5
    out = X.copy()
    out[flips] = X[flips, :, :, ::-1]
    return out
