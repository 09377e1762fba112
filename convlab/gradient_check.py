"""Numerical gradients by centred differences, for checking analytic backward passes.

Each probe perturbs one entry of x in place and restores it afterwards, so x is unchanged
when a function returns. Run checks in float64: float32 round-off swamps the difference.
"""

import numpy as np


def _probe(f, x, ix, h):
    """(f(x + h e_ix), f(x - h e_ix)) with x[ix] restored; outputs copied in case f reuses
    its buffers."""
    old = x[ix]
    x[ix] = old + h
    f_plus = np.array(f(x), copy=True)
    x[ix] = old - h
    f_minus = np.array(f(x), copy=True)
    x[ix] = old
    return f_plus, f_minus


def eval_numerical_gradient(f, x, verbose=True, h=1e-5):
    """Gradient of a scalar function f(x) at x: (f(x + h) - f(x - h)) / 2h per entry."""
    grad = np.zeros_like(x)
    for ix in np.ndindex(x.shape):
        f_plus, f_minus = _probe(f, x, ix, h)
        grad[ix] = (f_plus - f_minus) / (2 * h)
        if verbose:
            print(ix, grad[ix])
    return grad


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """Gradient of sum(f(x) * df) at x, i.e. the backward pass of f for upstream gradient df."""
    grad = np.zeros_like(x)
    for ix in np.ndindex(x.shape):
        f_plus, f_minus = _probe(f, x, ix, h)
        grad[ix] = np.sum((f_plus - f_minus) * df) / (2 * h)
    return grad


def grad_check_sparse(f, x, analytic_grad, num_checks=10, h=1e-5, seed=None):
    """Compare analytic_grad with the numerical gradient at num_checks random entries.

    Prints each comparison and returns the list of relative errors.
    """
    rng = np.random.default_rng(seed)
    errors = []
    for _ in range(num_checks):
        ix = tuple(int(rng.integers(m)) for m in x.shape)
        f_plus, f_minus = _probe(f, x, ix, h)
        numerical = float((f_plus - f_minus) / (2 * h))
        analytic = float(analytic_grad[ix])
        denom = abs(numerical) + abs(analytic)
        rel = abs(numerical - analytic) / denom if denom > 0 else 0.0
        errors.append(rel)
        print(f"numerical: {numerical:f} analytic: {analytic:f}, relative error: {rel:e}")
    return errors


def rel_error(x, y):
    """Largest elementwise relative error max |x - y| / max(1e-8, |x| + |y|)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def eval_numerical_gradient_blobs(f, inputs, output, h=1e-5):
    """Numerical gradients for functions on blobs (objects with ``vals`` and ``diffs``
    arrays, the course's older layer style): f(*inputs, output) writes output.vals; returns
    for each input blob the gradient of sum(output.vals * output.diffs) w.r.t. its vals."""
    def output_of(_):
        f(*inputs, output)
        return output.vals

    return [eval_numerical_gradient_array(output_of, blob.vals, output.diffs, h)
            for blob in inputs]


def eval_numerical_gradient_net(net, inputs, output, h=1e-5):
    """eval_numerical_gradient_blobs for a net whose forward() reads ``inputs`` and writes
    ``output``."""
    return eval_numerical_gradient_blobs(lambda *args: net.forward(), inputs, output, h=h)

