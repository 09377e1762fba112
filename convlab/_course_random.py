"""Random draws the way the course makes them, for the assignment-1 models.

CS231n's notebooks call ``np.random.seed(...)`` and print values every student gets, which
the course's code draws from NumPy's global random state with ``np.random.randn`` and
``np.random.choice``. ``CourseRandom(None)`` draws exactly so (same functions, same call
order), so those published values come out; ``CourseRandom(seed)`` draws from its own
Generator instead, reproducible and independent of anything else in the process.
"""

import numpy as np

__all__ = ["CourseRandom"]


class CourseRandom:
    """randn / choice from NumPy's global state (seed None) or from a Generator(seed)."""

    def __init__(self, seed=None):
        self.seed = seed
        self.rng = None if seed is None else np.random.default_rng(seed)

    def randn(self, *shape):
        """Standard normal draws of ``shape``, as np.random.randn(*shape)."""
        if self.rng is None:
            return np.random.randn(*shape)  # noqa: NPY002 (the course's global state)
        return self.rng.standard_normal(shape)

    def choice(self, n, size, replace=True):
        """``size`` indices in [0, n), as np.random.choice(n, size, replace)."""
        if self.rng is None:
            return np.random.choice(n, size, replace=replace)  # noqa: NPY002 (as above)
        return self.rng.choice(n, size, replace=replace)
