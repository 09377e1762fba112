"""A stand-in GPU for machines without one: arrays that live "on a device" and refuse every
implicit host transfer, as CuPy's arrays do.

``StrictArray`` wraps a NumPy array. NumPy functions and ufuncs given one dispatch to it
(__array_function__ / __array_ufunc__) and return StrictArrays; mixing one with a host
ndarray, indexing it with a host array, or converting it with np.asarray raises TypeError,
which is how CuPy fails on the same code. ``strict_module`` plays the cupy module: its
functions are NumPy's, returning StrictArrays, and only ``asarray``/``array`` take host
data (an explicit copy to the device). ``install(monkeypatch)`` makes convlab.backend treat
StrictArrays as GPU arrays and ``strict_module`` as cupy, so the code paths a GPU runs are
exercised in CI: every ``np.`` call a layer makes where it needed ``xp.`` fails here.

What it cannot tell: CuPy functions that NumPy has but CuPy lacks, and GPU numerics. The
cupy-parametrised tests cover those where a GPU is present.
"""

import contextlib

import numpy as np

# Functions that copy host data to the device when called explicitly (cupy.asarray).
_TRANSFERS = ("asarray", "array")


class StrictArray(np.lib.mixins.NDArrayOperatorsMixin):
    """A NumPy array on the stand-in device."""

    __slots__ = ("_data",)

    def __init__(self, data):
        self._data = data

    # ------------------------------------------------------------ what CuPy arrays have
    @property
    def device(self):
        return _Device(0)

    def get(self):
        """A host copy, as cupy.ndarray.get()."""
        return self._data.copy()

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed (a device "
                        "array; use .get() or convlab.backend.asnumpy)")

    # ------------------------------------------------------------ NumPy protocols
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if "out" in kwargs:
            kwargs["out"] = tuple(_unwrap(o) for o in kwargs["out"])
        result = getattr(ufunc, method)(*(_unwrap(i) for i in inputs), **kwargs)
        return _wrap(result)

    def __array_function__(self, func, types, args, kwargs):
        return _wrap(func(*_unwrap_all(args), **_unwrap_all(kwargs)))

    # ------------------------------------------------------------ Python protocols
    def __getitem__(self, key):
        return _wrap(self._data[_unwrap_key(key)])

    def __setitem__(self, key, value):
        self._data[_unwrap_key(key)] = _unwrap(value)

    def __len__(self):
        return len(self._data)

    def __iter__(self):
        return (_wrap(row) for row in self._data)

    def __bool__(self):
        return bool(self._data)

    def __float__(self):
        return float(self._data)

    def __int__(self):
        return int(self._data)

    def __index__(self):
        return self._data.__index__()

    def __format__(self, spec):
        return format(self._data.item() if self._data.ndim == 0 else self._data, spec)

    def __repr__(self):
        return f"StrictArray({self._data!r})"

    def __getattr__(self, name):
        # _data: not set yet (copy, pickle). Dunders: NumPy would find the wrapped array's
        # __array_interface__ and convert without asking, the very leak this class catches.
        if name == "_data" or name.startswith("__"):
            raise AttributeError(name)
        value = getattr(self._data, name)
        if callable(value):
            return lambda *args, **kwargs: _wrap(value(*_unwrap_all(args),
                                                      **_unwrap_all(kwargs)))
        return _wrap(value)


class _Device:
    def __init__(self, index):
        self.id = index

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _refuse_host(value):
    if isinstance(value, np.ndarray):
        raise TypeError(f"a host numpy.ndarray of shape {value.shape} met a device array: "
                        "CuPy refuses implicit host-to-device transfers")


def _unwrap(value):
    if isinstance(value, StrictArray):
        return value._data
    _refuse_host(value)
    return value


def _unwrap_all(obj):
    if isinstance(obj, dict):
        return {k: _unwrap_all(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap_all(v) for v in obj)
    return _unwrap(obj)


def _unwrap_key(key):
    return tuple(_unwrap(k) for k in key) if isinstance(key, tuple) else _unwrap(key)


def _wrap(value):
    """Arrays and NumPy scalars come back as device arrays (CuPy's reductions return 0-d
    arrays, not scalars); tuples of them element by element; anything else as it is."""
    if isinstance(value, (np.ndarray, np.generic)):
        return StrictArray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class _Random:
    def default_rng(self, seed=None):
        return _Generator(np.random.default_rng(seed))


class _Generator:
    def __init__(self, generator):
        self._generator = generator

    def random(self, size=None, dtype=np.float64):
        return _wrap(self._generator.random(size, dtype=dtype))


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1

    @staticmethod
    def getDevice():
        return 0


class _Cuda:
    runtime = _Runtime()

    @staticmethod
    def Device(index=0):
        return contextlib.nullcontext(_Device(index))


class _StrictModule:
    """The stand-in for the cupy module."""

    ndarray = StrictArray
    random = _Random()
    cuda = _Cuda()

    def __getattr__(self, name):
        value = getattr(np, name)
        if isinstance(value, type) or not callable(value):
            return value  # dtypes (np.float32), constants
        if name in _TRANSFERS:
            return lambda a, *args, **kwargs: StrictArray(
                np.array(a._data if isinstance(a, StrictArray) else a, *args, **kwargs))
        return lambda *args, **kwargs: _wrap(value(*_unwrap_all(args), **_unwrap_all(kwargs)))


strict_module = _StrictModule()


def install(monkeypatch):
    """Make convlab.backend see StrictArrays as GPU arrays of 'cuda:0'."""
    from convlab import backend

    monkeypatch.setattr(backend, "_loaded_cupy", lambda: strict_module)
    monkeypatch.setattr(backend, "_cupy", lambda: strict_module)
    monkeypatch.setattr(backend, "_is_device_array", lambda a: isinstance(a, StrictArray))
