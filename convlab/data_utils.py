"""The cs231n module path for data loading; everything lives in :mod:`convlab.data`.

``load_CIFAR_batch``, ``load_CIFAR10`` and ``get_CIFAR10_data`` keep the CS231n names,
argument orders and return values; the rest is convlab's (see docs/API.md).
"""

from convlab.data import *  # noqa: F403
from convlab.data import __all__  # noqa: F401
