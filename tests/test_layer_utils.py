"""Sandwich layers: gradients, and equality with the naive layers composed in order."""

import numpy as np
import pytest
from conftest import check_layer_gradients, distinct_values

from convlab import layer_utils, layers
from convlab.fast_layers import conv_backward_fast, conv_forward_fast
from convlab.gradient_check import rel_error

CONV = {"stride": 1, "pad": 1}
POOL = {"pool_height": 2, "pool_width": 2, "stride": 2}


def test_affine_relu_gradients(rng):
    x, w, b = rng.standard_normal((3, 5)), rng.standard_normal((5, 4)), rng.standard_normal(4)
    check_layer_gradients(
        layer_utils.affine_relu_forward, layer_utils.affine_relu_backward, [x, w, b], rng
    )


def _without_bias(forward, backward, b):
    """Checks a bias that feeds a batchnorm: its gradient is exactly zero (the mean
    subtraction removes it), which a relative error cannot measure, so assert that directly
    and check the other inputs numerically."""

    def forward_fixed_b(x, w, *rest):
        return forward(x, w, b, *rest)

    def backward_drop_db(dout, cache):
        dx, dw, db, *rest = backward(dout, cache)
        assert np.max(np.abs(db)) < 1e-10
        return (dx, dw, *rest)

    return forward_fixed_b, backward_drop_db


@pytest.mark.parametrize("normalization", ["batchnorm", "layernorm"])
def test_affine_norm_relu_gradients(normalization, rng):
    x, w, b = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)

    def forward(x, w, b, gamma, beta):
        return layer_utils.affine_norm_relu_forward(
            x, w, b, gamma, beta, {"mode": "train"}, normalization
        )

    if normalization == "batchnorm":
        forward, backward = _without_bias(forward, layer_utils.affine_norm_relu_backward, b)
        check_layer_gradients(forward, backward, [x, w, gamma, beta], rng)
    else:
        check_layer_gradients(
            forward, layer_utils.affine_norm_relu_backward, [x, w, b, gamma, beta], rng
        )


def test_conv_sandwich_gradients(rng):
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    b, gamma, beta = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(4)
    check_layer_gradients(
        lambda x, w, b: layer_utils.conv_relu_forward(x, w, b, CONV),
        layer_utils.conv_relu_backward,
        [x, w, b],
        rng,
    )
    forward, backward = _without_bias(
        lambda x, w, b, g, be: layer_utils.conv_bn_relu_forward(
            x, w, b, g, be, CONV, {"mode": "train"}
        ),
        layer_utils.conv_bn_relu_backward,
        b,
    )
    check_layer_gradients(forward, backward, [x, w, gamma, beta], rng)


def test_conv_relu_pool_equals_naive_composition_and_gradients(rng):
    # Distinct, spaced values keep max-pool ties and relu kinks away from the probes.
    x = distinct_values(rng, (2, 3, 6, 6), spacing=1e-1)
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    out, cache = layer_utils.conv_relu_pool_forward(x, w, b, CONV, POOL)
    a, _ = layers.conv_forward_naive(x, w, b, CONV)
    expected, _ = layers.max_pool_forward_naive(layers.relu_forward(a)[0], POOL)
    assert rel_error(out, expected) < 1e-12

    check_layer_gradients(
        lambda x, w, b: layer_utils.conv_relu_pool_forward(x, w, b, CONV, POOL),
        layer_utils.conv_relu_pool_backward,
        [x, w, b],
        rng,
    )
    dout = rng.standard_normal(out.shape)
    dx, dw, db = layer_utils.conv_relu_pool_backward(dout, cache)
    no_dx, dw_only, db_only = layer_utils.conv_relu_pool_backward(dout, cache, need_dx=False)
    assert no_dx is None
    np.testing.assert_array_equal(dw_only, dw)
    np.testing.assert_array_equal(db_only, db)


def test_conv_backward_fast_without_dx_matches(rng):
    x, w, b = (
        rng.standard_normal((3, 2, 7, 7)),
        rng.standard_normal((5, 2, 3, 3)),
        rng.standard_normal(5),
    )
    out, cache = conv_forward_fast(x, w, b, {"stride": 2, "pad": 1})
    dout = rng.standard_normal(out.shape)
    _, dw, db = conv_backward_fast(dout, cache)
    dx, dw_only, db_only = conv_backward_fast(dout, cache, need_dx=False)
    assert dx is None
    np.testing.assert_array_equal(dw_only, dw)
    np.testing.assert_array_equal(db_only, db)
