"""Convolutional networks.

As cs231n's classifiers/cnn.py, this module star-imports the layers, the
fast layers and the sandwich layers, so ``from convlab.classifiers.cnn import *`` also
brings ``conv_forward_fast``, ``conv_relu_pool_forward`` ... as course notebooks expect.
"""

import numpy as np

from convlab._course_random import CourseRandom
from convlab.classifiers.base import Classifier, init_std
from convlab.fast_layers import *  # noqa: F403
from convlab.layer_utils import *  # noqa: F403
from convlab.layer_utils import (
    affine_backward_fast,
    affine_forward_fast,
    affine_relu_backward,
    affine_relu_forward,
    conv_relu_pool_backward,
    conv_relu_pool_forward,
)
from convlab.layers import *  # noqa: F403
from convlab.layers import softmax_loss


class ThreeLayerConvNet(Classifier):
    """conv - relu - 2x2 max pool - affine - relu - affine - softmax.

    The convolution has stride 1 and 'same' padding (filter_size odd), so the pool halves
    H and W. Params: W1 (F, C, k, k), b1 (F,), W2 (F * H/2 * W/2, hidden_dim), b2,
    W3 (hidden_dim, num_classes), b3. ``seed`` seeds the weight initialisation;
    ``weight_scale=None`` uses He's std sqrt(2 / fan_in) per layer (scaled down for the scores
    layer, so the initial loss is ln(num_classes)).
    """

    def __init__(
        self,
        input_dim=(3, 32, 32),
        num_filters=32,
        filter_size=7,
        hidden_dim=100,
        num_classes=10,
        weight_scale=1e-3,
        reg=0.0,
        dtype=np.float32,
        seed=None,
    ):
        C, H, W = input_dim
        if filter_size % 2 != 1:
            raise ValueError(f"filter_size must be odd for 'same' padding, got {filter_size}")
        if H < 2 or W < 2:
            raise ValueError(f"input must be at least 2x2 for the 2x2 pool, got {H}x{W}")
        self.init_args = dict(
            input_dim=[int(d) for d in input_dim],
            num_filters=num_filters,
            filter_size=filter_size,
            hidden_dim=hidden_dim,
            num_classes=num_classes,
            weight_scale=weight_scale,
            reg=reg,
            dtype=np.dtype(dtype).name,
        )
        self.input_shape = (C, H, W)
        self.num_classes = num_classes
        self.reg = reg
        self.dtype = np.dtype(dtype)
        self.conv_param = {"stride": 1, "pad": (filter_size - 1) // 2}
        self.pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}

        rng = CourseRandom(seed)  # seed None: NumPy's global state, as the course draws
        pooled_dim = num_filters * (H // 2) * (W // 2)
        weight_shapes = [
            (num_filters, C, filter_size, filter_size),
            (pooled_dim, hidden_dim),
            (hidden_dim, num_classes),
        ]
        self.params = {}
        for i, shape in enumerate(weight_shapes, start=1):
            fan_in = int(np.prod(shape[1:])) if i == 1 else shape[0]
            std = init_std(weight_scale, fan_in, scores=i == len(weight_shapes))
            self.params[f"W{i}"] = (std * rng.randn(*shape)).astype(dtype)
            # The bias has one entry per output unit: filters for the conv, columns otherwise.
            self.params[f"b{i}"] = np.zeros(shape[0] if i == 1 else shape[1], dtype=dtype)

    def loss(self, X, y=None):
        """X: (N, C, H, W). Returns scores (N, num_classes) when y is None, else (loss, grads)."""
        X, y = self._check_batch(X, y)
        p = self.params
        pooled, pool_cache = conv_relu_pool_forward(
            X, p["W1"], p["b1"], self.conv_param, self.pool_param
        )
        hidden, hidden_cache = affine_relu_forward(pooled, p["W2"], p["b2"])
        scores, scores_cache = affine_forward_fast(hidden, p["W3"], p["b3"])
        if y is None:
            return scores

        loss, dscores = softmax_loss(scores, y)
        grads = {}
        dhidden, grads["W3"], grads["b3"] = affine_backward_fast(dscores, scores_cache)
        dpooled, grads["W2"], grads["b2"] = affine_relu_backward(dhidden, hidden_cache)
        _, grads["W1"], grads["b1"] = conv_relu_pool_backward(dpooled, pool_cache, need_dx=False)
        loss += self._l2(("W1", "W2", "W3"), grads)
        return loss, grads
