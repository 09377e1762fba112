"""A restricted unpickler for the official CIFAR-10 batches.

The batches are Python pickles, and unpickling can run arbitrary code. This unpickler
resolves only the handful of NumPy array constructors the format needs and refuses every
other global, so a malicious file cannot call anything; still, load archives only from a
source you trust.
"""

import pickle

import numpy as np


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


class _UnpickledArray(np.ndarray):
    """Stands in for ``numpy.ndarray`` in a pickle. A pickled array names the class only as
    the type for ``_reconstruct`` to create (an empty array that ``__setstate__`` then
    fills, after checking that the bytes match the shape). Calling it is refused: the
    ndarray constructor can wrap a few bytes in a zero-stride view of any size, and the
    first copy of that view would allocate it."""

    def __new__(cls, *args, **kwargs):
        raise pickle.UnpicklingError("refusing to call numpy.ndarray(...) from a pickle")


def _guarded_reconstruct(reconstruct):
    def _reconstruct(subtype, shape, dtype):
        # NumPy always pickles the empty (0,) placeholder that __setstate__ fills; any other
        # shape would be allocated before a single byte of data is checked.
        if subtype is not _UnpickledArray or tuple(shape) != (0,):
            raise pickle.UnpicklingError(f"refusing to reconstruct an array of shape {shape}")
        return reconstruct(subtype, shape, dtype)

    return _reconstruct


def _plain_arrays(obj):
    """The unpickled object with every _UnpickledArray turned into a plain ndarray view."""
    if isinstance(obj, np.ndarray):
        return obj.view(np.ndarray)
    if isinstance(obj, dict):
        return {key: _plain_arrays(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_plain_arrays(value) for value in obj]
    return obj


def _safe_globals():
    reconstruct = _guarded_reconstruct(_reconstruct_function())
    frombuffer = _frombuffer_function()
    scalar = _scalar_function()
    table = {
        ("numpy", "ndarray"): _UnpickledArray,
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


def safe_load(file):
    """Unpickle one object from the binary ``file`` with the restricted unpickler
    (byte strings stay bytes, as in the Python 2 pickles of the official batches)."""
    return _plain_arrays(_RestrictedUnpickler(file).load())
