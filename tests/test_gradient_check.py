"""The numerical-gradient helpers against closed forms; x is left unchanged."""

import numpy as np

from convlab.gradient_check import (
    eval_numerical_gradient,
    eval_numerical_gradient_array,
    grad_check_sparse,
    rel_error,
)


def test_scalar_gradient_matches_closed_form(rng):
    x = rng.standard_normal((3, 4))
    x_before = x.copy()
    grad = eval_numerical_gradient(lambda v: np.sum(v**3), x, verbose=False)
    assert rel_error(grad, 3 * x**2) < 1e-8
    np.testing.assert_array_equal(x, x_before)


def test_array_gradient_is_vector_jacobian_product(rng):
    x = rng.standard_normal(5)
    A = rng.standard_normal((4, 5))
    df = rng.standard_normal(4)
    grad = eval_numerical_gradient_array(lambda v: A @ v, x, df)
    assert rel_error(grad, A.T @ df) < 1e-9


def test_grad_check_sparse_reports_small_and_large_errors(rng, capsys):
    x = rng.standard_normal((6, 6))
    good = grad_check_sparse(lambda v: np.sum(v**2), x, 2 * x, num_checks=5, seed=0)
    bad = grad_check_sparse(lambda v: np.sum(v**2), x, 2.2 * x, num_checks=5, seed=0)
    assert max(good) < 1e-8 and min(bad) > 1e-2
    assert "relative error" in capsys.readouterr().out


def test_rel_error_is_symmetric_and_zero_for_equal():
    assert rel_error(np.ones(3), np.ones(3)) == 0
    assert rel_error([1.0, 2.0], [1.0, 2.2]) == rel_error([1.0, 2.2], [1.0, 2.0])
