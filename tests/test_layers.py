"""Every layer: numerical gradient checks in float64, float32 == float64 forward, bad input."""

import numpy as np
import pytest
from conftest import (
    FORWARD_RTOL,
    away_from_zero,
    check_layer_gradients,
    distinct_values,
)

from convlab import layers
from convlab.gradient_check import eval_numerical_gradient, rel_error

# ----------------------------------------------------------------------------- gradients


def test_affine_gradients(rng):
    x = rng.standard_normal((4, 2, 3))
    w = rng.standard_normal((6, 5))
    b = rng.standard_normal(5)
    check_layer_gradients(layers.affine_forward, layers.affine_backward, [x, w, b], rng)


def test_affine_forward_matches_cs231n_reference_values():
    # The cs231n notebook's fixed example; its expected output is a closed form evaluation.
    num_inputs, input_shape, output_dim = 2, (4, 5, 6), 3
    input_size = num_inputs * np.prod(input_shape)
    weight_size = output_dim * np.prod(input_shape)
    x = np.linspace(-0.1, 0.5, num=input_size).reshape(num_inputs, *input_shape)
    w = np.linspace(-0.2, 0.3, num=weight_size).reshape(np.prod(input_shape), output_dim)
    b = np.linspace(-0.3, 0.1, num=output_dim)
    out, _ = layers.affine_forward(x, w, b)
    correct_out = np.array(
        [[1.49834967, 1.70660132, 1.91485297], [3.25553199, 3.5141327, 3.77273342]]
    )
    assert rel_error(out, correct_out) < 1e-7


@pytest.mark.parametrize(
    "forward, backward",
    [
        (layers.relu_forward, layers.relu_backward),
        (lambda x: layers.leaky_relu_forward(x, 0.1), layers.leaky_relu_backward),
        (lambda x: layers.elu_forward(x, 1.5), layers.elu_backward),
    ],
    ids=["relu", "leaky_relu", "elu"],
)
def test_activation_gradients(forward, backward, rng):
    x = away_from_zero(rng.standard_normal((5, 7)))
    check_layer_gradients(forward, backward, [x], rng)


def test_relu_zeroes_negatives_only():
    x = np.array([[-2.0, -0.0, 0.5, 3.0]])
    out, _ = layers.relu_forward(x)
    np.testing.assert_array_equal(out, [[0, 0, 0.5, 3.0]])


@pytest.mark.parametrize("loss_fn", [layers.softmax_loss, layers.svm_loss])
def test_loss_gradients(loss_fn, rng):
    N, C = 20, 7
    x = 0.5 * rng.standard_normal((N, C))
    y = rng.integers(C, size=N)
    numeric = eval_numerical_gradient(lambda s: loss_fn(s, y)[0], x, verbose=False)
    _, dx = loss_fn(x, y)
    assert rel_error(dx, numeric) < 1e-7


def test_softmax_loss_closed_form():
    # Equal scores: every class has probability 1/C, so the loss is ln C exactly.
    x = np.zeros((3, 10))
    loss, dx = layers.softmax_loss(x, np.array([0, 4, 9]))
    assert loss == pytest.approx(np.log(10), rel=1e-12)
    np.testing.assert_allclose(dx.sum(axis=1), 0, atol=1e-15)


def test_softmax_loss_is_stable_for_huge_scores():
    loss, dx = layers.softmax_loss(np.array([[1e4, 0.0], [0.0, 1e4]]), np.array([0, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(dx))
    assert loss == pytest.approx(5e3)


def test_svm_loss_closed_form():
    x = np.array([[3.0, 1.0, 2.5]])
    loss, _ = layers.svm_loss(x, np.array([0]))
    # margins: class 1: max(0, 1 - 3 + 1) = 0, class 2: max(0, 2.5 - 3 + 1) = 0.5
    assert loss == pytest.approx(0.5)


@pytest.mark.parametrize("backward", [layers.batchnorm_backward, layers.batchnorm_backward_alt])
def test_batchnorm_gradients(backward, rng):
    N, D = 6, 5
    x = 5 * rng.standard_normal((N, D)) + 12
    gamma = rng.standard_normal(D)
    beta = rng.standard_normal(D)

    def forward(x, gamma, beta):
        return layers.batchnorm_forward(x, gamma, beta, {"mode": "train"})

    check_layer_gradients(forward, backward, [x, gamma, beta], rng)


def test_batchnorm_backward_alt_equals_step_by_step(rng):
    x = rng.standard_normal((50, 30)) * 3 + 1
    gamma, beta = rng.standard_normal(30), rng.standard_normal(30)
    _, cache = layers.batchnorm_forward(x, gamma, beta, {"mode": "train"})
    dout = rng.standard_normal(x.shape)
    for a, b in zip(
        layers.batchnorm_backward(dout, cache),
        layers.batchnorm_backward_alt(dout, cache),
        strict=True,
    ):
        assert rel_error(a, b) < 1e-10


def test_layernorm_gradients(rng):
    N, D = 4, 6
    x = 5 * rng.standard_normal((N, D)) + 12
    gamma, beta = rng.standard_normal(D), rng.standard_normal(D)

    def forward(x, gamma, beta):
        return layers.layernorm_forward(x, gamma, beta, {"mode": "train"})

    check_layer_gradients(forward, layers.layernorm_backward, [x, gamma, beta], rng)


def test_spatial_batchnorm_gradients(rng):
    N, C, H, W = 2, 3, 4, 5
    x = 5 * rng.standard_normal((N, C, H, W)) + 12
    gamma, beta = rng.standard_normal(C), rng.standard_normal(C)

    def forward(x, gamma, beta):
        return layers.spatial_batchnorm_forward(x, gamma, beta, {"mode": "train"})

    check_layer_gradients(forward, layers.spatial_batchnorm_backward, [x, gamma, beta], rng)


def test_spatial_groupnorm_gradients(rng):
    N, C, H, W, G = 2, 6, 2, 3, 2
    x = 5 * rng.standard_normal((N, C, H, W)) + 12
    gamma = rng.standard_normal((1, C, 1, 1))
    beta = rng.standard_normal((1, C, 1, 1))

    def forward(x, gamma, beta):
        return layers.spatial_groupnorm_forward(x, gamma, beta, G, {})

    check_layer_gradients(forward, layers.spatial_groupnorm_backward, [x, gamma, beta], rng)


def test_dropout_gradients_with_seed(rng):
    x = rng.standard_normal((10, 10)) + 10
    param = {"mode": "train", "p": 0.3, "seed": 123}
    check_layer_gradients(
        lambda x: layers.dropout_forward(x, param), layers.dropout_backward, [x], rng
    )


CONV_GEOMETRIES = [
    # (N, C, H, W), (F, HH, WW), stride, pad
    ((2, 3, 7, 7), (4, 3, 3), 1, 1),
    ((2, 2, 8, 6), (3, 3, 2), 2, 0),
    ((1, 3, 5, 7), (2, 5, 3), 3, 2),
]


@pytest.mark.parametrize("x_shape, w_shape, stride, pad", CONV_GEOMETRIES)
def test_conv_naive_gradients(x_shape, w_shape, stride, pad, rng):
    x = rng.standard_normal(x_shape)
    F, HH, WW = w_shape
    w = rng.standard_normal((F, x_shape[1], HH, WW))
    b = rng.standard_normal(F)
    conv_param = {"stride": stride, "pad": pad}

    def forward(x, w, b):
        return layers.conv_forward_naive(x, w, b, conv_param)

    check_layer_gradients(forward, layers.conv_backward_naive, [x, w, b], rng)


def test_conv_naive_matches_explicit_sum(rng):
    """Independent reference:
    out[n, f, i, j] = sum_{c,p,q} xpad[n, c, i*s+p, j*s+q] w[f, c, p, q] + b[f]."""
    x = rng.standard_normal((2, 3, 6, 5))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(4)
    s, pad = 2, 1
    out, _ = layers.conv_forward_naive(x, w, b, {"stride": s, "pad": pad})
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    H_out, W_out = 1 + (6 + 2 - 3) // s, 1 + (5 + 2 - 2) // s
    assert out.shape == (2, 4, H_out, W_out)
    for n in range(2):
        for f in range(4):
            for i in range(H_out):
                for j in range(W_out):
                    expected = np.sum(xp[n, :, i * s : i * s + 3, j * s : j * s + 2] * w[f]) + b[f]
                    assert out[n, f, i, j] == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_conv_without_bias(rng):
    x, w = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    conv_param = {"stride": 1, "pad": 1}
    out, cache = layers.conv_forward_naive(x, w, None, conv_param)
    out_zero_bias, _ = layers.conv_forward_naive(x, w, np.zeros(4), conv_param)
    np.testing.assert_array_equal(out, out_zero_bias)
    assert layers.conv_backward_naive(np.ones_like(out), cache)[2] is None


POOL_GEOMETRIES = [
    # (N, C, H, W), pool_height, pool_width, stride
    ((2, 3, 8, 8), 2, 2, 2),
    ((2, 2, 7, 9), 3, 2, 2),  # windows overlap in H and do not tile
    ((1, 2, 5, 5), 3, 3, 1),
]


@pytest.mark.parametrize("x_shape, ph, pw, stride", POOL_GEOMETRIES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_naive_gradients(x_shape, ph, pw, stride, kind, rng):
    x = distinct_values(rng, x_shape)
    pool_param = {"pool_height": ph, "pool_width": pw, "stride": stride}
    forward = getattr(layers, f"{kind}_pool_forward_naive")
    backward = getattr(layers, f"{kind}_pool_backward_naive")
    check_layer_gradients(lambda x: forward(x, pool_param), backward, [x], rng)


def test_max_pool_naive_values():
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    out, _ = layers.max_pool_forward_naive(x, {"pool_height": 2, "pool_width": 2, "stride": 2})
    np.testing.assert_array_equal(out[0, 0], [[5, 7], [13, 15]])


def test_global_avg_pool_gradients(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    check_layer_gradients(layers.global_avg_pool_forward, layers.global_avg_pool_backward, [x], rng)


# ----------------------------------------------------------------------------- modes and state


def test_batchnorm_train_normalizes_and_test_uses_running_stats(rng):
    N, D = 200, 3
    x = rng.standard_normal((N, D)) * [1.0, 5.0, 10.0] + [0.0, -3.0, 7.0]
    gamma, beta = np.array([1.0, 2.0, 3.0]), np.array([0.0, -1.0, 1.0])
    bn_param = {"mode": "train"}
    out, _ = layers.batchnorm_forward(x, gamma, beta, bn_param)
    np.testing.assert_allclose(out.mean(axis=0), beta, atol=1e-10)
    np.testing.assert_allclose(out.std(axis=0), gamma, rtol=1e-4)

    for _ in range(300):
        layers.batchnorm_forward(rng.standard_normal((N, D)) * 2 + 1, gamma, beta, bn_param)
    assert np.allclose(bn_param["running_mean"], 1, atol=0.15)
    assert np.allclose(bn_param["running_var"], 4, rtol=0.15)

    bn_param["mode"] = "test"
    x_test = rng.standard_normal((N, D)) * 2 + 1
    out, cache = layers.batchnorm_forward(x_test, gamma, beta, bn_param)
    expected = (
        gamma * (x_test - bn_param["running_mean"]) / np.sqrt(bn_param["running_var"] + 1e-5) + beta
    )
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    assert cache is None


def test_batchnorm_running_average_update_rule(rng):
    x = rng.standard_normal((10, 4))
    rm, rv = rng.standard_normal(4), rng.random(4)
    bn_param = {
        "mode": "train",
        "momentum": 0.8,
        "running_mean": rm.copy(),
        "running_var": rv.copy(),
    }
    layers.batchnorm_forward(x, np.ones(4), np.zeros(4), bn_param)
    np.testing.assert_allclose(bn_param["running_mean"], 0.8 * rm + 0.2 * x.mean(axis=0))
    np.testing.assert_allclose(bn_param["running_var"], 0.8 * rv + 0.2 * x.var(axis=0))


def test_batchnorm_running_stats_created_in_input_dtype(rng):
    x = rng.standard_normal((8, 3)).astype(np.float32)
    bn_param = {"mode": "train"}
    layers.batchnorm_forward(x, np.ones(3, np.float32), np.zeros(3, np.float32), bn_param)
    assert bn_param["running_mean"].dtype == np.float32
    assert bn_param["running_var"].dtype == np.float32


def test_dropout_keep_ratio_statistics(rng):
    x = rng.standard_normal((500, 500)) + 10
    for p in (0.25, 0.4, 0.7):
        out, _ = layers.dropout_forward(x, {"mode": "train", "p": p})
        kept = np.mean(out != 0)
        assert abs(kept - p) < 0.01
        # inverted dropout keeps the expected activation unchanged
        assert abs(out.mean() - x.mean()) < 0.05 * x.mean()


def test_dropout_test_mode_is_identity(rng):
    x = rng.standard_normal((20, 20))
    out, cache = layers.dropout_forward(x, {"mode": "test", "p": 0.3})
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(layers.dropout_backward(x, cache), x)


def test_dropout_seed_reproducible_without_global_state(rng):
    x = rng.standard_normal((50, 50))
    # The legacy global state is read only to prove dropout never touches it.
    global_state = np.random.get_state()[1].copy()  # noqa: NPY002
    a, _ = layers.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 7})
    b, _ = layers.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 7})
    c, _ = layers.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 8})
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(
        np.random.get_state()[1],  # noqa: NPY002
        global_state,
    )


# ----------------------------------------------------------------------------- dtypes


def _forward_cases(rng):
    x4 = rng.standard_normal((2, 4, 6, 6))
    x2 = rng.standard_normal((5, 8))
    conv_w = rng.standard_normal((3, 4, 3, 3))
    pool = {"pool_height": 2, "pool_width": 2, "stride": 2}
    return {
        "affine": (
            layers.affine_forward,
            [x2, rng.standard_normal((8, 3)), rng.standard_normal(3)],
        ),
        "relu": (layers.relu_forward, [x2]),
        "batchnorm": (
            lambda x, g, b: layers.batchnorm_forward(x, g, b, {"mode": "train"}),
            [x2, rng.standard_normal(8), rng.standard_normal(8)],
        ),
        "layernorm": (
            lambda x, g, b: layers.layernorm_forward(x, g, b, {}),
            [x2, rng.standard_normal(8), rng.standard_normal(8)],
        ),
        "spatial_batchnorm": (
            lambda x, g, b: layers.spatial_batchnorm_forward(x, g, b, {"mode": "train"}),
            [x4, rng.standard_normal(4), rng.standard_normal(4)],
        ),
        "groupnorm": (
            lambda x, g, b: layers.spatial_groupnorm_forward(x, g, b, 2, {}),
            [x4, rng.standard_normal((1, 4, 1, 1)), rng.standard_normal((1, 4, 1, 1))],
        ),
        "conv": (
            lambda x, w, b: layers.conv_forward_naive(x, w, b, {"stride": 1, "pad": 1}),
            [x4, conv_w, rng.standard_normal(3)],
        ),
        "max_pool": (lambda x: layers.max_pool_forward_naive(x, pool), [x4]),
        "avg_pool": (lambda x: layers.avg_pool_forward_naive(x, pool), [x4]),
        "dropout": (
            lambda x: layers.dropout_forward(x, {"mode": "train", "p": 0.5, "seed": 1}),
            [x2],
        ),
        "elu": (layers.elu_forward, [x2]),
        "leaky_relu": (layers.leaky_relu_forward, [x2]),
    }


@pytest.mark.parametrize("name", list(_forward_cases(np.random.default_rng(0))))
def test_forward_float32_matches_float64(name):
    forward, inputs = _forward_cases(np.random.default_rng(0))[name]
    out64, _ = forward(*inputs)
    out32, _ = forward(*[a.astype(np.float32) for a in inputs])
    assert out64.dtype == np.float64 and out32.dtype == np.float32
    assert rel_error(out32, out64) < FORWARD_RTOL[np.float32]


def test_loss_float32_gradient_stays_float32(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    for loss_fn in (layers.softmax_loss, layers.svm_loss):
        loss, dx = loss_fn(x, np.array([0, 1, 2, 0]))
        assert dx.dtype == np.float32 and isinstance(loss, float)


# ----------------------------------------------------------------------------- bad input


def test_affine_shape_mismatch_raises(rng):
    with pytest.raises(ValueError, match=r"w must have shape \(12, M\)"):
        layers.affine_forward(
            rng.standard_normal((2, 3, 4)), rng.standard_normal((10, 5)), np.zeros(5)
        )
    with pytest.raises(ValueError, match="b must have shape"):
        layers.affine_forward(rng.standard_normal((2, 4)), rng.standard_normal((4, 5)), np.zeros(4))


def test_mixed_and_integer_dtypes_promote_as_numpy_does(rng):
    x, w = rng.standard_normal((2, 4)), rng.standard_normal((4, 3))
    out, _ = layers.affine_forward(x, w.astype(np.float32), np.zeros(3))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, x @ w.astype(np.float32), rtol=1e-12)
    # float32 throughout stays float32; a float16 input computes in float32.
    out32, _ = layers.affine_forward(x.astype(np.float32), w.astype(np.float32),
                                     np.zeros(3, np.float32))
    assert out32.dtype == np.float32
    assert layers.relu_forward(x.astype(np.float16))[0].dtype == np.float32
    # The course's ConvolutionalNetworks notebook builds a bias of ints: float results.
    out, cache = layers.affine_forward(x, w, np.array([1, 2, 3]))
    np.testing.assert_allclose(out, x @ w + [1.0, 2.0, 3.0], rtol=1e-12)
    dx, dw, db = layers.affine_backward(np.ones_like(out), cache)
    assert db.dtype == np.float64
    relu_out, _ = layers.relu_forward(np.arange(-2, 3))
    assert relu_out.dtype == np.float64
    np.testing.assert_array_equal(relu_out, [0.0, 0.0, 0.0, 1.0, 2.0])
    bn_out, _ = layers.batchnorm_forward(np.arange(12).reshape(4, 3), np.ones(3, int),
                                         np.zeros(3, int), {"mode": "train"})
    assert bn_out.dtype == np.float64
    np.testing.assert_allclose(bn_out.mean(axis=0), 0, atol=1e-12)
    with pytest.raises(TypeError, match="real numbers"):
        layers.relu_forward(x.astype(np.complex128))
    with pytest.raises(TypeError, match="real numbers"):
        layers.affine_forward(x, w, np.zeros(3, dtype=np.longdouble))
    with pytest.raises(TypeError, match="NumPy array"):
        layers.relu_forward([1.0, 2.0])


@pytest.mark.parametrize("loss_fn", [layers.softmax_loss, layers.svm_loss])
def test_bad_labels_raise(loss_fn, rng):
    x = rng.standard_normal((3, 4))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        loss_fn(x, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        loss_fn(x, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        loss_fn(x, np.array([0, -1, 2]))
    with pytest.raises(TypeError, match="integers"):
        loss_fn(x, np.array([0.0, 1.0, 2.0]))


def test_conv_geometry_errors(rng):
    x = rng.standard_normal((1, 3, 4, 4))
    with pytest.raises(ValueError, match="does not fit"):
        layers.conv_forward_naive(
            x, rng.standard_normal((2, 3, 7, 7)), np.zeros(2), {"stride": 1, "pad": 1}
        )
    with pytest.raises(ValueError, match="input channels"):
        layers.conv_forward_naive(
            x, rng.standard_normal((2, 2, 3, 3)), np.zeros(2), {"stride": 1, "pad": 1}
        )
    with pytest.raises(ValueError, match="stride"):
        layers.conv_forward_naive(
            x, rng.standard_normal((2, 3, 3, 3)), np.zeros(2), {"stride": 0, "pad": 1}
        )
    with pytest.raises(ValueError, match="pad"):
        layers.conv_forward_naive(
            x, rng.standard_normal((2, 3, 3, 3)), np.zeros(2), {"stride": 1, "pad": -1}
        )
    with pytest.raises(ValueError, match="4-dimensional"):
        layers.conv_forward_naive(
            x[0], rng.standard_normal((2, 3, 3, 3)), np.zeros(2), {"stride": 1, "pad": 1}
        )


def test_pool_geometry_errors(rng):
    x = rng.standard_normal((1, 1, 3, 3))
    with pytest.raises(ValueError, match="does not fit"):
        layers.max_pool_forward_naive(x, {"pool_height": 4, "pool_width": 2, "stride": 2})
    with pytest.raises(ValueError, match="stride"):
        layers.max_pool_forward_naive(x, {"pool_height": 2, "pool_width": 2, "stride": 0})


def test_groupnorm_G_must_divide_C(rng):
    x = rng.standard_normal((2, 6, 3, 3))
    gamma, beta = np.ones((1, 6, 1, 1)), np.zeros((1, 6, 1, 1))
    with pytest.raises(ValueError, match="dividing C=6"):
        layers.spatial_groupnorm_forward(x, gamma, beta, 4, {})


def test_normalization_param_shapes_checked(rng):
    with pytest.raises(ValueError, match="gamma and beta"):
        layers.batchnorm_forward(
            rng.standard_normal((4, 3)), np.ones(4), np.zeros(4), {"mode": "train"}
        )


def test_unknown_modes_raise(rng):
    x = rng.standard_normal((4, 3))
    with pytest.raises(ValueError, match="'train' or 'test'"):
        layers.batchnorm_forward(x, np.ones(3), np.zeros(3), {"mode": "eval"})
    with pytest.raises(ValueError, match="'train' or 'test'"):
        layers.dropout_forward(x, {"mode": "training", "p": 0.5})
    with pytest.raises(ValueError, match="keep probability"):
        layers.dropout_forward(x, {"mode": "train", "p": 0})


def test_batchnorm_backward_needs_train_cache(rng):
    x = rng.standard_normal((4, 3))
    bn_param = {"mode": "test"}
    _, cache = layers.batchnorm_forward(x, np.ones(3), np.zeros(3), bn_param)
    with pytest.raises(ValueError, match="'train' mode"):
        layers.batchnorm_backward(x, cache)
