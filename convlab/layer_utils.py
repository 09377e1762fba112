"""Sandwich layers: common sequences of layers with one forward and one backward each.

Affine layers, convolutions and pooling go through the fast paths (convlab.fast_layers). As
cs231n's layer_utils.py, this module star-imports the layers and the fast layers, so
``from convlab.layer_utils import *`` brings them too.
"""

from convlab.fast_layers import *  # noqa: F403
from convlab.fast_layers import (
    affine_backward_fast,
    affine_forward_fast,
    conv_backward_fast,
    conv_forward_fast,
    conv_max_pool_backward_fast,
    conv_max_pool_forward_fast,
)
from convlab.layers import *  # noqa: F403
from convlab.layers import (
    batchnorm_backward_alt,
    batchnorm_forward,
    layernorm_backward,
    layernorm_forward,
    relu_backward,
    relu_forward,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
)


def affine_relu_forward(x, w, b):
    """affine -> relu. x: (N, d1, ..., dk), w: (D, M), b: (M,). Returns out (N, M), cache."""
    a, fc_cache = affine_forward_fast(x, w, b)
    out, relu_cache = relu_forward(a)
    return out, (fc_cache, relu_cache)


def affine_relu_backward(dout, cache):
    """Returns dx, dw, db."""
    fc_cache, relu_cache = cache
    return affine_backward_fast(relu_backward(dout, relu_cache), fc_cache)


def affine_norm_relu_forward(x, w, b, gamma, beta, norm_param, normalization):
    """affine -> batchnorm or layernorm -> relu; normalization is 'batchnorm' or 'layernorm'."""
    norm_forward = {"batchnorm": batchnorm_forward, "layernorm": layernorm_forward}
    if normalization not in norm_forward:
        raise ValueError(f"normalization must be 'batchnorm' or 'layernorm', got {normalization!r}")
    a, fc_cache = affine_forward_fast(x, w, b)
    an, norm_cache = norm_forward[normalization](a, gamma, beta, norm_param)
    out, relu_cache = relu_forward(an)
    return out, (fc_cache, norm_cache, relu_cache, normalization)


def affine_norm_relu_backward(dout, cache):
    """Returns dx, dw, db, dgamma, dbeta."""
    fc_cache, norm_cache, relu_cache, normalization = cache
    norm_backward = batchnorm_backward_alt if normalization == "batchnorm" else layernorm_backward
    dan = relu_backward(dout, relu_cache)
    da, dgamma, dbeta = norm_backward(dan, norm_cache)
    dx, dw, db = affine_backward_fast(da, fc_cache)
    return dx, dw, db, dgamma, dbeta


def conv_relu_forward(x, w, b, conv_param):
    """conv -> relu. x: (N, C, H, W), w: (F, C, HH, WW), b: (F,)."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    out, relu_cache = relu_forward(a)
    return out, (conv_cache, relu_cache)


def conv_relu_backward(dout, cache):
    """Returns dx, dw, db."""
    conv_cache, relu_cache = cache
    return conv_backward_fast(relu_backward(dout, relu_cache), conv_cache)


def conv_bn_relu_forward(x, w, b, gamma, beta, conv_param, bn_param):
    """conv -> spatial batchnorm -> relu; gamma, beta: (F,)."""
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    an, bn_cache = spatial_batchnorm_forward(a, gamma, beta, bn_param)
    out, relu_cache = relu_forward(an)
    return out, (conv_cache, bn_cache, relu_cache)


def conv_bn_relu_backward(dout, cache):
    """Returns dx, dw, db, dgamma, dbeta."""
    conv_cache, bn_cache, relu_cache = cache
    dan = relu_backward(dout, relu_cache)
    da, dgamma, dbeta = spatial_batchnorm_backward(dan, bn_cache)
    dx, dw, db = conv_backward_fast(da, conv_cache)
    return dx, dw, db, dgamma, dbeta


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """conv -> relu -> max pool, all three fused: conv_max_pool_forward_fast with relu
    (computed as conv -> max pool -> relu, the same function with the same gradient)."""
    return conv_max_pool_forward_fast(x, w, b, conv_param, pool_param, relu=True)


def conv_relu_pool_backward(dout, cache, need_dx=True):
    """Returns dx, dw, db; need_dx=False skips dx (None), for a network's first layer."""
    return conv_max_pool_backward_fast(dout, cache, need_dx=need_dx)
