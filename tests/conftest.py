"""Shared helpers: numerical gradients of a layer and input generators."""

import numpy as np
import pytest

from convlab.gradient_check import eval_numerical_gradient_array, rel_error

# Relative-error bounds for comparing a float32 result with the float64 one.
FORWARD_RTOL = {np.float32: 1e-4, np.float64: 1e-12}
GRAD_TOL = 1e-7


@pytest.fixture
def rng():
    return np.random.default_rng(231)


def distinct_values(rng, shape, spacing=1e-2):
    """Values with no two closer than ``spacing``: max pooling never meets a tie, even under
    the finite-difference probe, so its gradient is well defined."""
    values = rng.permutation(int(np.prod(shape))).astype(np.float64) * spacing
    return (values - values.mean()).reshape(shape)


def away_from_zero(x, margin=1e-2):
    """Push entries out of (-margin, margin), keeping ReLU-like kinks out of the probe's reach."""
    return np.where(np.abs(x) < margin, np.copysign(margin, x) + x, x)


def check_layer_gradients(forward, backward, inputs, rng, tol=GRAD_TOL):
    """Compare backward(dout, cache) with numerical gradients of every input in ``inputs``.

    forward: f(*inputs) -> (out, cache); backward returns the gradients in input order (or a
    single array for one input). Returns the relative errors.
    """
    out, cache = forward(*inputs)
    dout = rng.standard_normal(out.shape)
    analytic = backward(dout, cache)
    if not isinstance(analytic, tuple):
        analytic = (analytic,)
    errors = []
    for i, x in enumerate(inputs):
        if analytic[i] is None:
            continue

        def f_of_input(v, i=i):
            args = list(inputs)
            args[i] = v
            return forward(*args)[0]

        numeric = eval_numerical_gradient_array(f_of_input, x, dout)
        err = rel_error(analytic[i], numeric)
        assert err < tol, f"gradient of input {i} has relative error {err:.2e} > {tol:.0e}"
        errors.append(err)
    return errors
