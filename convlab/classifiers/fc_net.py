"""Fully connected networks: TwoLayerNet and FullyConnectedNet.

As cs231n's classifiers/fc_net.py, this module star-imports the layers and
sandwich layers, so ``from convlab.classifiers.fc_net import *`` also brings
``affine_forward``, ``batchnorm_forward``, ``affine_relu_forward`` ... as course notebooks
expect.
"""

import numpy as np

from convlab._checks import check_keep_probability
from convlab._course_random import CourseRandom
from convlab.classifiers.base import Classifier, init_std
from convlab.layer_utils import *  # noqa: F403
from convlab.layer_utils import (
    affine_backward_fast,
    affine_forward_fast,
    affine_norm_relu_backward,
    affine_norm_relu_forward,
    affine_relu_backward,
    affine_relu_forward,
)
from convlab.layers import *  # noqa: F403
from convlab.layers import (
    dropout_backward,
    dropout_forward,
    softmax_loss,
)

NORMALIZATIONS = {
    None: None,
    "batchnorm": "batchnorm",
    "batch_norm": "batchnorm",
    "layernorm": "layernorm",
    "layer_norm": "layernorm",
}


class TwoLayerNet(Classifier):
    """affine - relu - affine - softmax.

    Params: W1 (D, H), b1 (H,), W2 (H, C), b2 (C,); weights ~ N(0, weight_scale^2), biases 0.
    ``seed`` seeds the weight initialisation (np.random.Generator; None draws fresh entropy).
    """

    def __init__(
        self,
        input_dim=3 * 32 * 32,
        hidden_dim=100,
        num_classes=10,
        weight_scale=1e-3,
        reg=0.0,
        dtype=np.float64,
        seed=None,
    ):
        self.init_args = dict(
            input_dim=input_dim,
            hidden_dim=hidden_dim,
            num_classes=num_classes,
            weight_scale=weight_scale,
            reg=reg,
            dtype=np.dtype(dtype).name,
        )
        self.input_shape = (input_dim,)
        self.num_classes = num_classes
        self.reg = reg
        self.dtype = np.dtype(dtype)
        rng = CourseRandom(seed)  # seed None: NumPy's global state, as the course draws
        self.params = {
            "W1": (weight_scale * rng.randn(input_dim, hidden_dim)).astype(dtype),
            "b1": np.zeros(hidden_dim, dtype=dtype),
            "W2": (weight_scale * rng.randn(hidden_dim, num_classes)).astype(dtype),
            "b2": np.zeros(num_classes, dtype=dtype),
        }

    def loss(self, X, y=None):
        """X: (N, d1, ..., dk). Returns scores (N, C) when y is None, else (loss, grads)."""
        X, y = self._check_batch(X, y)
        p = self.params
        hidden, hidden_cache = affine_relu_forward(X, p["W1"], p["b1"])
        scores, scores_cache = affine_forward_fast(hidden, p["W2"], p["b2"])
        if y is None:
            return scores

        loss, dscores = softmax_loss(scores, y)
        grads = {}
        dhidden, grads["W2"], grads["b2"] = affine_backward_fast(dscores, scores_cache)
        _, grads["W1"], grads["b1"] = affine_relu_backward(dhidden, hidden_cache)
        loss += self._l2(("W1", "W2"), grads)
        return loss, grads


class FullyConnectedNet(Classifier):
    """{affine - [batchnorm | layernorm] - relu - [dropout]} x (L - 1) - affine - softmax.

    Params: W1..WL, b1..bL, and gamma1..gamma(L-1), beta1..beta(L-1) with normalization.
    ``dropout_keep_ratio`` is the keep probability; 1 disables dropout. Earlier editions'
    keywords: ``dropout`` (2018: the keep probability, 1 = off; 2017: 0 = off, so
    ``dropout=0`` also means no dropout; deprecated, with a warning for values in (0, 1),
    which the 2017 edition read as the drop probability) and ``use_batchnorm=True`` (2017-2018:
    ``normalization='batchnorm'``). ``seed`` seeds the weight initialisation and fixes the
    dropout mask, which makes the loss deterministic for gradient checks; the Solver draws
    fresh masks from its own generator while it trains (see Classifier.use_dropout_rng).
    L2 loss is 0.5 * reg * sum(W^2) over the weights only. ``weight_scale=None`` initialises
    each layer with He's std sqrt(2 / fan_in) instead of one fixed scale.
    """

    def __init__(
        self,
        hidden_dims,
        input_dim=3 * 32 * 32,
        num_classes=10,
        dropout_keep_ratio=1,
        normalization=None,
        reg=0.0,
        weight_scale=1e-2,
        dtype=np.float32,
        seed=None,
        dropout=None,
        use_batchnorm=None,
    ):
        if dropout is not None:
            # 2017's dropout=0 ("dropout strength 0") is no dropout; otherwise 2018's keep
            # probability.
            dropout_keep_ratio = 1 if dropout == 0 else dropout
            if 0 < dropout < 1:
                import warnings

                warnings.warn(
                    f"FullyConnectedNet(dropout={dropout}) is read as the keep probability "
                    "(the 2018 editions); in the 2017 edition it was the drop probability. "
                    f"Say dropout_keep_ratio={dropout} (or {1 - dropout:g}) instead.",
                    DeprecationWarning, stacklevel=2)
        if use_batchnorm:
            if normalization not in (None, "batchnorm", "batch_norm"):
                raise ValueError(f"use_batchnorm=True conflicts with normalization="
                                 f"{normalization!r}")
            normalization = "batchnorm"
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be None, 'batchnorm' or 'layernorm', got {normalization!r}"
            )
        check_keep_probability(dropout_keep_ratio, "dropout_keep_ratio")
        hidden_dims = [int(h) for h in hidden_dims]
        self.init_args = dict(
            hidden_dims=hidden_dims,
            input_dim=input_dim,
            num_classes=num_classes,
            dropout_keep_ratio=dropout_keep_ratio,
            normalization=NORMALIZATIONS[normalization],
            reg=reg,
            weight_scale=weight_scale,
            dtype=np.dtype(dtype).name,
        )
        self.normalization = NORMALIZATIONS[normalization]
        self.use_dropout = dropout_keep_ratio != 1
        self.reg = reg
        self.num_layers = 1 + len(hidden_dims)
        self.num_classes = num_classes
        self.input_shape = (input_dim,)
        self.dtype = np.dtype(dtype)

        rng = CourseRandom(seed)  # seed None: NumPy's global state, as the course draws
        dims = [input_dim, *hidden_dims, num_classes]
        self.params = {}
        for i in range(1, self.num_layers + 1):
            fan_in, fan_out = dims[i - 1], dims[i]
            std = init_std(weight_scale, fan_in, scores=i == self.num_layers)
            self.params[f"W{i}"] = (std * rng.randn(fan_in, fan_out)).astype(dtype)
            self.params[f"b{i}"] = np.zeros(fan_out, dtype=dtype)
            if self.normalization and i < self.num_layers:
                self.params[f"gamma{i}"] = np.ones(fan_out, dtype=dtype)
                self.params[f"beta{i}"] = np.zeros(fan_out, dtype=dtype)

        # One dropout_param shared by every dropout layer, as in cs231n.
        self.dropout_param = {}
        self.dropout_params = []
        if self.use_dropout:
            self.dropout_param = {"mode": "train", "p": dropout_keep_ratio}
            if seed is not None:
                self.dropout_param["seed"] = seed
            self.dropout_params = [self.dropout_param]
        self.bn_params = []
        if self.normalization == "batchnorm":
            self.bn_params = [{"mode": "train"} for _ in range(self.num_layers - 1)]
        elif self.normalization == "layernorm":
            self.bn_params = [{} for _ in range(self.num_layers - 1)]

    def loss(self, X, y=None):
        """X: (N, d1, ..., dk). Returns scores (N, C) when y is None, else (loss, grads)."""
        X, y = self._check_batch(X, y)
        self._set_mode(y)

        p = self.params
        caches = []
        h = X
        for i in range(1, self.num_layers):
            W, b = p[f"W{i}"], p[f"b{i}"]
            if self.normalization:
                h, cache = affine_norm_relu_forward(
                    h,
                    W,
                    b,
                    p[f"gamma{i}"],
                    p[f"beta{i}"],
                    self.bn_params[i - 1],
                    self.normalization,
                )
            else:
                h, cache = affine_relu_forward(h, W, b)
            dropout_cache = None
            if self.use_dropout:
                h, dropout_cache = dropout_forward(h, self.dropout_param)
            caches.append((cache, dropout_cache))
        L = self.num_layers
        scores, scores_cache = affine_forward_fast(h, p[f"W{L}"], p[f"b{L}"])
        if y is None:
            return scores

        loss, dscores = softmax_loss(scores, y)
        grads = {}
        dh, grads[f"W{L}"], grads[f"b{L}"] = affine_backward_fast(dscores, scores_cache)
        for i in range(L - 1, 0, -1):
            cache, dropout_cache = caches[i - 1]
            if self.use_dropout:
                dh = dropout_backward(dh, dropout_cache)
            if self.normalization:
                dh, dW, db, dgamma, dbeta = affine_norm_relu_backward(dh, cache)
                grads[f"gamma{i}"], grads[f"beta{i}"] = dgamma, dbeta
            else:
                dh, dW, db = affine_relu_backward(dh, cache)
            grads[f"W{i}"], grads[f"b{i}"] = dW, db
        loss += self._l2([f"W{i}" for i in range(1, L + 1)], grads)
        return loss, grads
