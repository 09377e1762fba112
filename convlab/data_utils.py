"""The cs231n module path for data loading; the data sets live in :mod:`convlab.data`,
``load_models`` in :mod:`convlab.serialization`.

``load_CIFAR_batch``, ``load_CIFAR10``, ``get_CIFAR10_data``, ``load_tiny_imagenet`` and
``load_models`` keep the CS231n names, argument orders and return values; the rest is
convlab's (see docs/API.md).
"""

from convlab import data
from convlab.data import *  # noqa: F403
from convlab.serialization import load_models

__all__ = [*data.__all__, "load_models"]
