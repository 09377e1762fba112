"""Update rules: one step against the closed form, state carried in config, dtype kept."""

import numpy as np
import pytest

from convlab import optim


@pytest.fixture
def wdw(rng):
    return rng.standard_normal((4, 5)), rng.standard_normal((4, 5))


def test_sgd_step(wdw):
    w, dw = wdw
    next_w, config = optim.sgd(w, dw, {"learning_rate": 0.1})
    np.testing.assert_allclose(next_w, w - 0.1 * dw)
    assert optim.sgd(w, dw)[1]["learning_rate"] == 1e-2


def test_sgd_momentum_two_steps(wdw):
    w, dw = wdw
    v0 = np.full_like(w, 0.5)
    w1, config = optim.sgd_momentum(w, dw, {"learning_rate": 0.1, "momentum": 0.9, "velocity": v0})
    v1 = 0.9 * v0 - 0.1 * dw
    np.testing.assert_allclose(w1, w + v1)
    w2, config = optim.sgd_momentum(w1, dw, config)
    np.testing.assert_allclose(w2, w1 + 0.9 * v1 - 0.1 * dw)


def test_sgd_momentum_defaults(wdw):
    _, config = optim.sgd_momentum(*wdw)
    assert config["learning_rate"] == 1e-2 and config["momentum"] == 0.9


def test_nesterov_step(wdw):
    w, dw = wdw
    v0 = np.full_like(w, -0.2)
    w1, config = optim.nesterov_momentum(w, dw, {"learning_rate": 0.05, "velocity": v0})
    v1 = 0.9 * v0 - 0.05 * dw
    np.testing.assert_allclose(w1, w - 0.9 * v0 + 1.9 * v1)
    np.testing.assert_allclose(config["velocity"], v1)


def test_adagrad_step(wdw):
    w, dw = wdw
    cache0 = np.full_like(w, 0.3)
    w1, config = optim.adagrad(w, dw, {"learning_rate": 0.1, "cache": cache0})
    cache1 = cache0 + dw**2
    np.testing.assert_allclose(w1, w - 0.1 * dw / (np.sqrt(cache1) + 1e-8))
    np.testing.assert_allclose(config["cache"], cache1)


def test_rmsprop_step(wdw):
    w, dw = wdw
    cache0 = np.full_like(w, 0.3)
    w1, config = optim.rmsprop(w, dw, {"learning_rate": 0.1, "cache": cache0})
    cache1 = 0.99 * cache0 + 0.01 * dw**2
    np.testing.assert_allclose(w1, w - 0.1 * dw / (np.sqrt(cache1) + 1e-8))
    assert config["decay_rate"] == 0.99 and config["epsilon"] == 1e-8


def test_adam_step_increments_t_before_bias_correction(wdw):
    w, dw = wdw
    m0, v0 = np.full_like(w, 0.1), np.full_like(w, 0.2)
    w1, config = optim.adam(w, dw, {"learning_rate": 0.01, "m": m0, "v": v0, "t": 5})
    assert config["t"] == 6
    m1 = 0.9 * m0 + 0.1 * dw
    v1 = 0.999 * v0 + 0.001 * dw**2
    expected = w - 0.01 * (m1 / (1 - 0.9**6)) / (np.sqrt(v1 / (1 - 0.999**6)) + 1e-8)
    np.testing.assert_allclose(w1, expected, rtol=1e-12)


def test_adam_first_step_moves_every_weight_by_learning_rate(wdw):
    # With t = 1 the bias corrections cancel: the step is lr * dw / (|dw| + eps) ~ lr * sign(dw).
    w, dw = wdw
    w1, config = optim.adam(w, dw)
    np.testing.assert_allclose(w - w1, 1e-3 * dw / (np.abs(dw) + 1e-8), rtol=1e-9)
    assert config["t"] == 1


def test_cs231n_adam_reference_values():
    # The cs231n notebook's adam example (t=5): a fixed expected next_w.
    N, D = 4, 5
    w = np.linspace(-0.4, 0.6, num=N * D).reshape(N, D)
    dw = np.linspace(-0.6, 0.4, num=N * D).reshape(N, D)
    m = np.linspace(0.6, 0.9, num=N * D).reshape(N, D)
    v = np.linspace(0.7, 0.5, num=N * D).reshape(N, D)
    next_w, _ = optim.adam(w, dw, {"learning_rate": 1e-2, "m": m, "v": v, "t": 5})
    expected_first_row = [-0.40094747, -0.34836187, -0.29577703, -0.24319299, -0.19060977]
    np.testing.assert_allclose(next_w[0], expected_first_row, rtol=1e-7)


@pytest.mark.parametrize("rule", list(optim.UPDATE_RULES.values()), ids=list(optim.UPDATE_RULES))
def test_rules_keep_float32(rule, rng):
    w = rng.standard_normal((3, 3)).astype(np.float32)
    dw = rng.standard_normal((3, 3)).astype(np.float32)
    config = None
    for _ in range(2):
        w, config = rule(w, dw, config)
    assert w.dtype == np.float32


@pytest.mark.parametrize("rule", list(optim.UPDATE_RULES.values()), ids=list(optim.UPDATE_RULES))
def test_rules_reject_mismatched_gradient(rule, rng):
    with pytest.raises(ValueError, match="does not match"):
        rule(rng.standard_normal((3, 3)), rng.standard_normal((3, 2)))


def _strided(a):
    """a's values in a view NumPy has but the compiled pass does not take (every other
    element of a wider array): the rules then run their NumPy expressions."""
    wide = np.zeros(a.shape + (2,), dtype=a.dtype)
    wide[..., 0] = a
    return wide[..., 0]


COMPILED_RULES = [optim.sgd_momentum, optim.nesterov_momentum, optim.adagrad, optim.rmsprop,
                  optim.adam]


@pytest.mark.parametrize("rule", COMPILED_RULES, ids=lambda rule: rule.__name__)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3,), (7, 5), (600, 450)], ids=["3", "7x5", "600x450"])
def test_compiled_update_equals_the_numpy_expressions(rule, dtype, shape, rng, threads):
    # 600 x 450 is past _PARALLEL_MIN_SIZE: its pass runs on the threads, in blocks with a
    # partial last one.
    assert 600 * 450 >= optim._PARALLEL_MIN_SIZE
    w = rng.standard_normal(shape).astype(dtype)
    assert optim._compiled(w, w) is not None and optim._compiled(_strided(w), w) is None
    compiled_w, compiled_config = w, {"learning_rate": 0.05}
    numpy_w, numpy_config = _strided(w), {"learning_rate": 0.05}
    for _ in range(3):
        dw = rng.standard_normal(shape).astype(dtype)
        compiled_w, compiled_config = rule(compiled_w, dw, compiled_config)
        numpy_w, numpy_config = rule(_strided(numpy_w), _strided(dw), numpy_config)
        assert compiled_w.dtype == numpy_w.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(compiled_w, numpy_w, rtol=tol, atol=tol)
    for key, value in numpy_config.items():
        np.testing.assert_allclose(compiled_config[key], value, rtol=tol, atol=tol)


@pytest.mark.parametrize("rule", COMPILED_RULES, ids=lambda rule: rule.__name__)
def test_compiled_update_writes_no_input(rule, rng):
    w, dw = rng.standard_normal((40, 30)), rng.standard_normal((40, 30))
    _, config = rule(w, dw)  # a config that holds the rule's state
    state = {key: value for key, value in config.items() if isinstance(value, np.ndarray)}
    assert state
    saved = {key: value.copy() for key, value in state.items()}
    w_before, dw_before = w.copy(), dw.copy()
    next_w, _ = rule(w, dw, config)
    assert not np.array_equal(next_w, w)
    np.testing.assert_array_equal(w, w_before)
    np.testing.assert_array_equal(dw, dw_before)
    for key, value in state.items():
        np.testing.assert_array_equal(value, saved[key])
