"""Random draws the way the course makes them.

CS231n's notebooks call ``np.random.seed(...)`` and print values every student gets, which
the course's code draws from NumPy's global random state with ``np.random.randn``,
``np.random.rand`` and ``np.random.choice``. ``CourseRandom(None)`` draws exactly so (same
functions, same call order), so those published values come out; ``CourseRandom(seed)``
draws from its own Generator instead, reproducible and independent of anything else in the
process.
"""

import numpy as np

__all__ = ["CourseRandom"]


class CourseRandom:
    """randn / random / choice / permutation from NumPy's global state (seed None) or from
    a Generator(seed).

    ``generator`` is a np.random.Generator for code that takes one (augmentation, dropout
    masks): the seeded one, or for seed None one over the global state's own bit generator,
    so ``np.random.seed`` governs it too (its ``random`` equals ``np.random.rand`` draw for
    draw).
    """

    def __init__(self, seed=None):
        self.seed = seed
        self.seeded = seed is not None
        self.generator = (np.random.default_rng(seed) if self.seeded
                          else np.random.Generator(np.random.get_bit_generator()))

    @classmethod
    def from_state(cls, state):
        """The CourseRandom whose ``state()`` was ``state`` (None: the global state's)."""
        random = cls(None if state is None else 0)
        if state is not None:
            random.generator.bit_generator.state = state
        return random

    def state(self):
        """The seeded generator's state (a dict for checkpoints), None for the global one,
        which belongs to the process rather than to whoever draws from it."""
        return self.generator.bit_generator.state if self.seeded else None

    def randn(self, *shape):
        """Standard normal draws of ``shape``, as np.random.randn(*shape)."""
        if not self.seeded:
            return np.random.randn(*shape)  # noqa: NPY002 (the course's global state)
        return self.generator.standard_normal(shape)

    def random(self, shape):
        """Uniform draws in [0, 1) of ``shape``, as np.random.rand(*shape)."""
        return self.generator.random(shape)

    def choice(self, n, size, replace=True):
        """``size`` indices in [0, n), as np.random.choice(n, size, replace)."""
        if not self.seeded:
            return np.random.choice(n, size, replace=replace)  # noqa: NPY002 (as above)
        return self.generator.choice(n, size, replace=replace)

    def permutation(self, n):
        """The integers [0, n) in random order, as np.random.permutation(n)."""
        if not self.seeded:
            return np.random.permutation(n)  # noqa: NPY002 (as above)
        return self.generator.permutation(n)
