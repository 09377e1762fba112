"""Where arrays live: NumPy on the host or CuPy on an NVIDIA GPU, behind one switch.

The layers are written once, against an array module ``xp``::

    xp = get_array_module(x)      # numpy for NumPy arrays, cupy for CuPy arrays
    out = xp.maximum(x, 0)

so the same lines run on either device, as Chainer's did. CuPy is optional
(``pip install "convlab[gpu]"``): nothing here imports it until a device array is asked
for, so ``import convlab`` and everything on the CPU work without it.

Devices are named ``"cpu"`` and ``"cuda"`` (the current GPU) or ``"cuda:K"`` (GPU K).
Moving data is always explicit: :func:`to_device` and :func:`asnumpy` copy between host and
GPU, and a layer never mixes the two (CuPy refuses implicit host transfers).
"""

import re
import sys

import numpy as np

__all__ = [
    "asnumpy",
    "check_device",
    "device_of",
    "get_array_module",
    "is_host",
    "to_device",
    "uniform",
]

_DEVICE = re.compile(r"cpu|cuda(?::(\d+))?")


def _loaded_cupy():
    """The cupy module if something already imported it, else None: a CuPy array can only
    exist once cupy is imported, so checking for one never imports it."""
    return sys.modules.get("cupy")


def _is_device_array(a):
    cupy = _loaded_cupy()
    return cupy is not None and isinstance(a, cupy.ndarray)


def _cupy():
    """The cupy module, checked to see a GPU; ModuleNotFoundError without CuPy, ValueError
    (the device asked for is not there) without a usable NVIDIA GPU, each saying what to
    do."""
    try:
        import cupy
    except ImportError as err:
        raise ModuleNotFoundError(
            "device 'cuda' needs CuPy, which is not installed: pip install \"convlab[gpu]\" "
            f"(the CuPy wheel for CUDA 12), or use device 'cpu' ({err})"
        ) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDARuntimeError: no driver, no device, or a broken setup
        raise ValueError(
            f"device 'cuda' needs an NVIDIA GPU, but CUDA reports none usable ({err}); use "
            "device 'cpu'"
        ) from None
    if count == 0:
        raise ValueError("device 'cuda' needs an NVIDIA GPU, but CUDA finds none; use "
                           "device 'cpu'")
    return cupy


def check_device(device):
    """``device`` in its canonical form, 'cpu' or 'cuda:K'; ValueError for any other name,
    and for 'cuda' the errors of a missing CuPy or GPU (see _cupy) and a GPU index that
    does not exist."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device.strip().lower()):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:K' (K a GPU index), "
                         f"got {device!r}")
    device = device.strip().lower()
    if device == "cpu":
        return "cpu"
    cupy = _cupy()
    index = _DEVICE.fullmatch(device).group(1)
    index = cupy.cuda.runtime.getDevice() if index is None else int(index)
    count = cupy.cuda.runtime.getDeviceCount()
    if index >= count:
        raise ValueError(f"device {device!r} does not exist: CUDA sees {count} GPU(s), "
                         f"cuda:0 to cuda:{count - 1}")
    return f"cuda:{index}"


def get_array_module(*arrays):
    """The array module of ``arrays``: cupy if any of them is a CuPy array, else numpy.
    Non-arrays (None, Python numbers) count as host values."""
    for a in arrays:
        if _is_device_array(a):
            return _loaded_cupy()
    return np


def is_host(a):
    """True unless ``a`` is a GPU array."""
    return not _is_device_array(a)


def device_of(a):
    """'cpu' for host arrays and values, 'cuda:K' for an array on GPU K."""
    return "cpu" if is_host(a) else f"cuda:{a.device.id}"


def asnumpy(obj):
    """``obj`` with every GPU array copied to the host as a NumPy array; dicts, lists and
    tuples are copied with their items converted, anything else is returned as it is."""
    return to_device(obj, "cpu")


def to_device(obj, device):
    """``obj`` with every array on ``device`` ('cpu' or 'cuda[:K]'): NumPy arrays are copied
    to the GPU, GPU arrays to the host or the other GPU; an array already there is returned
    as it is (no copy). Recurses into dicts, lists and tuples; other values pass through."""
    device = check_device(device)
    return _move(obj, device)


def _move(obj, device):
    if isinstance(obj, dict):
        return {key: _move(value, device) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_move(value, device) for value in obj)
    if not isinstance(obj, np.ndarray) and not _is_device_array(obj):
        return obj
    if device == "cpu":
        return obj.get() if _is_device_array(obj) else obj
    if device_of(obj) == device:
        return obj
    cupy = _cupy()
    with cupy.cuda.Device(int(device.split(":")[1])):
        return cupy.asarray(obj)


def uniform(rng, shape, like):
    """Uniform draws in [0, 1) of ``shape`` on the device of the array ``like``, from the
    host np.random.Generator ``rng``.

    On the host they are ``rng``'s own float64 draws (``rng.random(shape)``). For a GPU
    array a device generator is seeded from one draw of ``rng`` and draws in ``like``'s
    dtype, so the host generator stays the single source of randomness: the same rng state
    gives the same draws, and a checkpoint of the host state resumes the device stream too
    (CuPy's generators cannot be saved).
    """
    xp = get_array_module(like)
    if xp is np:
        return rng.random(shape)
    device_rng = xp.random.default_rng(int(rng.integers(2**63)))
    return device_rng.random(shape, dtype=like.dtype)
