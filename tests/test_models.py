"""Whole-model gradient checks (float64, every parameter), initial loss, and bad input."""

import numpy as np
import pytest
from conftest import assert_check_catches_wrong_gradients, check_model_gradients

from convlab.classifiers import FullyConnectedNet, ThreeLayerConvNet, TwoLayerNet


def test_two_layer_net_gradients(rng):
    N, D, H, C = 4, 6, 7, 3
    X = rng.standard_normal((N, D))
    y = rng.integers(C, size=N)
    model = TwoLayerNet(D, H, C, weight_scale=0.5, reg=0.3, dtype=np.float64, seed=0)
    check_model_gradients(model, X, y)


def test_two_layer_net_cs231n_reference_scores_and_loss():
    N, D, H, C = 3, 5, 50, 7
    X = np.linspace(-5.5, 4.5, num=N * D).reshape(D, N).T
    y = np.asarray([0, 5, 1])
    model = TwoLayerNet(input_dim=D, hidden_dim=H, num_classes=C, weight_scale=1e-3)
    model.params["W1"] = np.linspace(-0.7, 0.3, num=D * H).reshape(D, H)
    model.params["b1"] = np.linspace(-0.1, 0.9, num=H)
    model.params["W2"] = np.linspace(-0.3, 0.4, num=H * C).reshape(H, C)
    model.params["b2"] = np.linspace(-0.9, 0.1, num=C)
    scores = model.loss(X)
    correct_scores_first_row = [
        11.53165108,
        12.2917344,
        13.05181771,
        13.81190102,
        14.57198434,
        15.33206765,
        16.09215096,
    ]
    np.testing.assert_allclose(scores[0], correct_scores_first_row, rtol=1e-7)
    model.reg = 1.0
    loss, _ = model.loss(X, y)
    assert loss == pytest.approx(26.5948426952, rel=1e-9)


@pytest.mark.parametrize("normalization", [None, "batchnorm", "layernorm"])
@pytest.mark.parametrize("keep", [1, 0.5])
def test_fully_connected_net_gradients(normalization, keep, rng):
    N, D, C = 3, 5, 4
    X = rng.standard_normal((N, D))
    y = rng.integers(C, size=N)
    model = FullyConnectedNet(
        [6, 5],
        input_dim=D,
        num_classes=C,
        normalization=normalization,
        reg=0.1,
        weight_scale=0.5,
        dropout_keep_ratio=keep,
        dtype=np.float64,
        seed=3,
    )
    check_model_gradients(model, X, y)


def _small_models(rng):
    """One small float64 model of every fully connected / three-layer kind, with a batch."""
    X = rng.standard_normal((3, 5))
    y = rng.integers(4, size=3)
    yield TwoLayerNet(5, 7, 4, weight_scale=0.5, reg=0.3, dtype=np.float64, seed=0), X, y
    for normalization in (None, "batchnorm", "layernorm"):
        yield FullyConnectedNet([6, 5], input_dim=5, num_classes=4, normalization=normalization,
                                reg=0.1, weight_scale=0.5, dropout_keep_ratio=0.5,
                                dtype=np.float64, seed=3), X, y
    images = rng.standard_normal((2, 3, 8, 8))
    yield ThreeLayerConvNet(input_dim=(3, 8, 8), num_filters=3, filter_size=3, hidden_dim=7,
                            weight_scale=0.3, reg=0.05, dtype=np.float64, seed=1), images, y[:2]


def test_gradient_check_catches_wrong_gradients_of_every_model_kind(rng):
    for model, X, y in _small_models(rng):
        assert_check_catches_wrong_gradients(model, X, y)


def test_fully_connected_net_accepts_legacy_names(rng):
    with pytest.warns(DeprecationWarning, match="keep probability"):
        model = FullyConnectedNet([4], input_dim=3, dropout=0.7, normalization="batch_norm",
                                  seed=0)
    assert model.dropout_param["p"] == 0.7 and model.normalization == "batchnorm"
    assert "gamma1" in model.params and "gamma2" not in model.params
    # The 2017 edition: use_batchnorm=True, and dropout=0 for "no dropout".
    model = FullyConnectedNet([4, 4], input_dim=3, dropout=0, use_batchnorm=True, seed=0)
    assert not model.use_dropout and model.normalization == "batchnorm"
    assert {"gamma1", "gamma2"} <= set(model.params)
    assert not FullyConnectedNet([4], input_dim=3, dropout=1).use_dropout  # 2018's "off"
    assert FullyConnectedNet([4], input_dim=3, use_batchnorm=False).normalization is None
    with pytest.raises(ValueError, match="conflicts"):
        FullyConnectedNet([4], input_dim=3, use_batchnorm=True, normalization="layernorm")


def test_conv_net_gradients(rng):
    N = 2
    X = rng.standard_normal((N, 3, 8, 8))
    y = rng.integers(10, size=N)
    model = ThreeLayerConvNet(
        input_dim=(3, 8, 8),
        num_filters=3,
        filter_size=3,
        hidden_dim=7,
        weight_scale=0.3,
        reg=0.05,
        dtype=np.float64,
        seed=1,
    )
    check_model_gradients(model, X, y)


@pytest.mark.parametrize(
    "make_model, input_shape",
    [
        (lambda: TwoLayerNet(input_dim=3 * 8 * 8, weight_scale=1e-3, seed=0), (3, 8, 8)),
        (
            lambda: FullyConnectedNet([20, 20], input_dim=3 * 8 * 8, weight_scale=1e-3, seed=0),
            (3, 8, 8),
        ),
        (
            lambda: FullyConnectedNet(
                [20], input_dim=3 * 8 * 8, normalization="batchnorm", weight_scale=1e-3, seed=0
            ),
            (3, 8, 8),
        ),
        (lambda: ThreeLayerConvNet(input_dim=(3, 8, 8), seed=0), (3, 8, 8)),
    ],
    ids=["two_layer", "fc", "fc_bn", "three_layer_conv"],
)
def test_initial_loss_is_log_num_classes(make_model, input_shape, rng):
    model = make_model()
    X = rng.standard_normal((50, *input_shape))
    y = rng.integers(10, size=50)
    loss, _ = model.loss(X, y)
    assert loss == pytest.approx(np.log(10), abs=0.02)


def test_float32_models_stay_float32(rng):
    for model in (
        FullyConnectedNet([8], input_dim=3 * 8 * 8, normalization="batchnorm", seed=0),
        ThreeLayerConvNet(input_dim=(3, 8, 8), num_filters=4, hidden_dim=8, seed=0),
    ):
        X = rng.standard_normal((4, 3, 8, 8))
        loss, grads = model.loss(X, np.array([0, 1, 2, 3]))
        assert all(g.dtype == np.float32 for g in grads.values())
        assert model.loss(X).dtype == np.float32


def test_models_reject_bad_input(rng):
    model = FullyConnectedNet([5], input_dim=12, num_classes=3, seed=0)
    with pytest.raises(ValueError, match=r"X must have shape \(N, 12\)"):
        model.loss(rng.standard_normal((2, 13)))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        model.loss(rng.standard_normal((2, 12)), np.array([0, 3]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        model.loss(rng.standard_normal((2, 12)), np.array([0, 1, 2]))
    conv = ThreeLayerConvNet(input_dim=(3, 8, 8), seed=0)
    with pytest.raises(ValueError, match=r"X must have shape \(N, 3, 8, 8\)"):
        conv.loss(rng.standard_normal((2, 8, 8, 3)))
    with pytest.raises(ValueError, match="normalization"):
        FullyConnectedNet([5], normalization="groupnorm")
    with pytest.raises(ValueError, match="odd"):
        ThreeLayerConvNet(filter_size=4)


def test_seed_makes_initialisation_reproducible():
    a = FullyConnectedNet([10], input_dim=5, seed=4).params["W1"]
    b = FullyConnectedNet([10], input_dim=5, seed=4).params["W1"]
    c = FullyConnectedNet([10], input_dim=5, seed=5).params["W1"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
