"""Layers as forward/backward pairs, written so the maths stays visible.

Every ``*_forward`` returns ``(out, cache)`` and its ``*_backward(dout, cache)`` returns the
gradients with respect to the forward's inputs. Losses return ``(loss, dscores)``. Inputs keep
their dtype: float32 in, float32 out; mixed or integer operands are promoted as NumPy promotes
them (integers compute in float64); gradient checks run in float64.

Every layer runs on the device its inputs live on: ``xp = get_array_module(x)`` is numpy
for NumPy arrays and cupy for CuPy arrays (see convlab.backend), and the maths below is
written against ``xp``.
"""

import numpy as np

from convlab._checks import (
    as_float_array,
    check_affine_operands,
    check_conv_operands,
    check_dout,
    check_int,
    check_keep_probability,
    check_labels,
    check_nonempty_batch,
    check_pool_input,
    norm_operands,
    pool_output_size,
    require_train_cache,
)
from convlab._course_random import CourseRandom
from convlab.backend import get_array_module, uniform

# ----------------------------------------------------------------------------- affine / relu


def affine_forward(x, w, b):
    """Fully connected layer: out = x.reshape(N, D) @ w + b.

    x: (N, d1, ..., dk) with D = d1 * ... * dk; w: (D, M); b: (M,).
    Returns out (N, M) and cache (x, w).
    """
    x, w, b = check_affine_operands(x, w, b)
    out = x.reshape(x.shape[0], w.shape[0]) @ w + b
    return out, (x, w)


def affine_backward(dout, cache):
    """dout: (N, M). Returns dx (x's shape), dw (D, M), db (M,)."""
    x, w = cache
    dout = check_dout(dout, (x.shape[0], w.shape[1]))
    x_flat = x.reshape(x.shape[0], w.shape[0])  # (N, D)
    dx = (dout @ w.T).reshape(x.shape)
    dw = x_flat.T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def relu_forward(x):
    """Elementwise max(0, x); the cache is x itself."""
    x = as_float_array(x)
    return get_array_module(x).maximum(x, 0), x


def relu_backward(dout, cache):
    """Gradient of relu_forward: dout where x > 0, else 0. dout: same shape as x."""
    x = cache
    return check_dout(dout, x.shape) * (x > 0)


def leaky_relu_forward(x, alpha=0.01):
    """max(x, alpha * x) for 0 <= alpha < 1; cache (x, alpha)."""
    x = as_float_array(x)
    if not 0 <= alpha < 1:
        raise ValueError(f"leaky relu slope alpha must be in [0, 1), got {alpha}")
    xp = get_array_module(x)
    return xp.where(x > 0, x, x * x.dtype.type(alpha)), (x, alpha)


def leaky_relu_backward(dout, cache):
    """Gradient of leaky_relu_forward: dout where x > 0, else alpha * dout."""
    x, alpha = cache
    dout = check_dout(dout, x.shape)
    return get_array_module(x).where(x > 0, dout, dout * dout.dtype.type(alpha))


def elu_forward(x, alpha=1.0):
    """x for x > 0, alpha * (exp(x) - 1) otherwise; cache (x, out, alpha)."""
    x = as_float_array(x)
    if alpha <= 0:
        raise ValueError(f"elu alpha must be positive, got {alpha}")
    alpha = x.dtype.type(alpha)
    xp = get_array_module(x)
    # expm1 of the clipped input: positive x would overflow exp yet takes the other branch.
    out = xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0)))
    return out, (x, out, alpha)


def elu_backward(dout, cache):
    """Gradient of elu_forward: dout where x > 0, else dout * alpha * exp(x)."""
    x, out, alpha = cache
    dout = check_dout(dout, x.shape)
    # For x <= 0, d/dx alpha (e^x - 1) = alpha e^x = out + alpha.
    return get_array_module(x).where(x > 0, dout, dout * (out + alpha))


# ----------------------------------------------------------------------------- losses


def softmax_loss(x, y):
    """Softmax cross-entropy, averaged over the batch.

    x: (N, C) scores; y: (N,) integer labels in [0, C).
    Returns loss (float) and dx (N, C).
    """
    x = as_float_array(x, ndim=2)
    y = check_labels(y, x.shape[0], x.shape[1])
    xp = get_array_module(x, y)
    rows = xp.arange(x.shape[0])
    shifted = x - x.max(axis=1, keepdims=True)  # stable: exp never overflows
    log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_probs[rows, y].mean()
    dx = xp.exp(log_probs)
    dx[rows, y] -= 1
    N = x.shape[0]
    dx /= N
    return float(loss), dx


def svm_loss(x, y):
    """Multiclass hinge loss with margin 1, averaged over the batch.

    x: (N, C) scores; y: (N,) integer labels in [0, C).
    Returns loss (float) and dx (N, C).
    """
    x = as_float_array(x, ndim=2)
    y = check_labels(y, x.shape[0], x.shape[1])
    xp = get_array_module(x, y)
    N = x.shape[0]
    rows = xp.arange(N)
    correct = x[rows, y][:, None]  # (N, 1)
    margins = xp.maximum(0, x - correct + 1)
    margins[rows, y] = 0
    loss = margins.sum() / N
    positive = (margins > 0).astype(x.dtype)
    positive[rows, y] = -positive.sum(axis=1)
    return float(loss), positive / N


# ----------------------------------------------------------------------------- normalization


def _normalize_backward(dxhat, xhat, inv_std, axis):
    """dx for xhat = (x - mean) * inv_std with statistics taken over ``axis``.

    The closed form of the chain rule through mean and variance:
    dx = inv_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
    """
    return inv_std * (
        dxhat
        - dxhat.mean(axis=axis, keepdims=True)
        - xhat * (dxhat * xhat).mean(axis=axis, keepdims=True)
    )





def batchnorm_running_stats(bn_param, D, dtype, xp=np):
    """bn_param's running_mean and running_var, (D,) zeros of ``dtype`` from the array
    module ``xp`` when absent; ValueError for another shape. Shared by every batchnorm
    implementation."""
    running_mean = bn_param.get("running_mean")
    running_var = bn_param.get("running_var")
    if running_mean is None:
        running_mean = xp.zeros(D, dtype=dtype)
    if running_var is None:
        running_var = xp.zeros(D, dtype=dtype)
    if running_mean.shape != (D,) or running_var.shape != (D,):
        raise ValueError(f"running_mean and running_var must have shape ({D},)")
    return running_mean, running_var





def _batchnorm_forward(x, gamma, beta, bn_param, axes):
    """Batchnorm with statistics over ``axes`` of x and one (gamma, beta) per remaining
    channel; shared by the flat and the spatial layer so neither needs to transpose x."""
    D = x.shape[1]
    x, gamma, beta = norm_operands(x, gamma, beta, (D,))
    mode = bn_param.get("mode")
    eps = bn_param.get("eps", 1e-5)
    momentum = bn_param.get("momentum", 0.9)
    xp = get_array_module(x)
    running_mean, running_var = batchnorm_running_stats(bn_param, D, x.dtype, xp)
    channel_shape = (D,) + (1,) * (x.ndim - 2)  # broadcasts a (D,) vector over x's channels
    gamma_b, beta_b = gamma.reshape(channel_shape), beta.reshape(channel_shape)

    if mode == "train":
        check_nonempty_batch(x)
        mean = x.mean(axis=axes, keepdims=True)
        x_centered = x - mean
        var = (x_centered * x_centered).mean(axis=axes, keepdims=True)
        inv_std = 1 / xp.sqrt(var + eps)
        xhat = x_centered * inv_std
        out = gamma_b * xhat + beta_b
        running_mean = momentum * running_mean + (1 - momentum) * mean.reshape(D)
        running_var = momentum * running_var + (1 - momentum) * var.reshape(D)
        cache = (axes, x_centered, inv_std, xhat, gamma_b)
    elif mode == "test":
        scale = gamma / xp.sqrt(running_var + eps)
        out = scale.reshape(channel_shape) * (x - running_mean.reshape(channel_shape)) + beta_b
        cache = None
    else:
        raise ValueError(f"bn_param['mode'] must be 'train' or 'test', got {mode!r}")

    bn_param["running_mean"] = running_mean.astype(x.dtype, copy=False)
    bn_param["running_var"] = running_var.astype(x.dtype, copy=False)
    return out.astype(x.dtype, copy=False), cache


def batchnorm_forward(x, gamma, beta, bn_param):
    """Batch normalization over the batch axis.

    x: (N, D); gamma, beta: (D,); bn_param: dict with 'mode' ('train' | 'test'), optional
    'eps' (1e-5), 'momentum' (0.9), 'running_mean', 'running_var' (D,) (created as zeros and
    written back into bn_param). In train mode the batch statistics normalize x and update
    running = momentum * running + (1 - momentum) * batch_stat; test mode uses the running ones.
    Returns out (N, D) and cache (None in test mode).
    """
    x = as_float_array(x, ndim=2)
    return _batchnorm_forward(x, gamma, beta, bn_param, axes=(0,))





def batchnorm_backward(dout, cache):
    """Backward through batchnorm one node of the computation graph at a time.

    out = gamma * xhat + beta, xhat = xc * inv_std, xc = x - mean, inv_std = 1/sqrt(var + eps),
    var = mean(xc**2). Returns dx (N, D), dgamma (D,), dbeta (D,).
    """
    require_train_cache(cache)
    axes, x_centered, inv_std, xhat, gamma = cache
    dout = check_dout(dout, xhat.shape)
    M = dout.size // inv_std.size  # values per statistic
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    dxhat = dout * gamma
    # xhat = xc * inv_std: two paths, directly and through inv_std.
    dinv_std = (dxhat * x_centered).sum(axis=axes, keepdims=True)
    dxc = dxhat * inv_std
    # inv_std = (var + eps)^(-1/2)  =>  d inv_std / d var = -inv_std^3 / 2
    dvar = -0.5 * inv_std**3 * dinv_std
    # var = mean(xc^2)
    dxc += 2 * x_centered * dvar / M
    # xc = x - mean(x)
    dx = dxc - dxc.mean(axis=axes, keepdims=True)
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout, cache):
    """Backward through batchnorm in one closed-form expression (same result, fewer passes)."""
    require_train_cache(cache)
    axes, _, inv_std, xhat, gamma = cache
    dout = check_dout(dout, xhat.shape)
    M = dout.size // inv_std.size  # values per statistic
    dbeta = dout.sum(axis=axes, keepdims=True)
    dgamma = (dout * xhat).sum(axis=axes, keepdims=True)
    # _normalize_backward with dxhat = gamma * dout, whose two means are exactly
    # gamma * dbeta / M and gamma * dgamma / M: reusing them saves two passes over the batch.
    dx = (gamma * inv_std / M) * (M * dout - dbeta - xhat * dgamma)
    return dx, dgamma.reshape(-1), dbeta.reshape(-1)


def layernorm_forward(x, gamma, beta, ln_param):
    """Layer normalization: each sample normalized over its features.

    x: (N, D); gamma, beta: (D,); ln_param: dict with optional 'eps' (1e-5); other keys
    are ignored. Identical in train and test. Returns out (N, D) and cache.
    """
    x = as_float_array(x, ndim=2)
    x, gamma, beta = norm_operands(x, gamma, beta, (x.shape[1],))
    eps = ln_param.get("eps", 1e-5)
    mean = x.mean(axis=1, keepdims=True)  # (N, 1)
    inv_std = 1 / get_array_module(x).sqrt(x.var(axis=1, keepdims=True) + eps)
    xhat = (x - mean) * inv_std
    out = gamma * xhat + beta
    return out.astype(x.dtype, copy=False), (inv_std, xhat, gamma)


def layernorm_backward(dout, cache):
    """Returns dx (N, D), dgamma (D,), dbeta (D,)."""
    inv_std, xhat, gamma = cache
    dout = check_dout(dout, xhat.shape)
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dx = _normalize_backward(dout * gamma, xhat, inv_std, axis=1)
    return dx, dgamma, dbeta


def spatial_batchnorm_forward(x, gamma, beta, bn_param):
    """Batchnorm per channel over (N, H, W).

    x: (N, C, H, W); gamma, beta: (C,); bn_param as in batchnorm_forward.
    """
    x = as_float_array(x, ndim=4)
    return _batchnorm_forward(x, gamma, beta, bn_param, axes=(0, 2, 3))


def spatial_batchnorm_backward(dout, cache):
    """dout: (N, C, H, W). Returns dx (N, C, H, W), dgamma (C,), dbeta (C,)."""
    return batchnorm_backward_alt(dout, cache)


def spatial_groupnorm_forward(x, gamma, beta, G, gn_param):
    """Group normalization: each sample's channels split into G groups, normalized per group.

    x: (N, C, H, W) with C divisible by G; gamma, beta: (1, C, 1, 1); gn_param: dict with
    optional 'eps' (1e-5), other keys ignored. Returns out (N, C, H, W) and cache.
    """
    x = as_float_array(x, ndim=4)
    N, C, H, W = x.shape
    if C % check_int(G, "G", 1):
        raise ValueError(f"G must be a positive integer dividing C={C}, got {G!r}")
    x, gamma, beta = norm_operands(x, gamma, beta, (1, C, 1, 1))
    eps = gn_param.get("eps", 1e-5)
    x_groups = x.reshape(N, G, -1)  # (N, G, C/G * H * W)
    mean = x_groups.mean(axis=2, keepdims=True)
    inv_std = 1 / get_array_module(x).sqrt(x_groups.var(axis=2, keepdims=True) + eps)
    xhat = ((x_groups - mean) * inv_std).reshape(x.shape)
    out = gamma * xhat + beta
    return out.astype(x.dtype, copy=False), (G, inv_std, xhat, gamma)


def spatial_groupnorm_backward(dout, cache):
    """Returns dx (N, C, H, W), dgamma (1, C, 1, 1), dbeta (1, C, 1, 1)."""
    G, inv_std, xhat, gamma = cache
    dout = check_dout(dout, xhat.shape)
    N = dout.shape[0]
    dbeta = dout.sum(axis=(0, 2, 3), keepdims=True)
    dgamma = (dout * xhat).sum(axis=(0, 2, 3), keepdims=True)
    dxhat = (dout * gamma).reshape(N, G, -1)
    dx = _normalize_backward(dxhat, xhat.reshape(N, G, -1), inv_std, axis=2)
    return dx.reshape(dout.shape), dgamma, dbeta


# ----------------------------------------------------------------------------- dropout


def dropout_forward(x, dropout_param):
    """Inverted dropout: keep each unit with probability p and scale kept units by 1/p.

    dropout_param: 'mode' ('train' | 'test'), 'p' (keep probability in (0, 1]), optional
    'seed' (int): the same seed gives the same mask, drawn from its own np.random.Generator so
    NumPy's global random state is never touched; optional 'rng' (a np.random.Generator,
    used instead of 'seed'): the mask is drawn from it, fresh on every call (the Solver lends
    its own generator this way while it trains). With neither, the mask is drawn from NumPy's
    global state as cs231n draws it (np.random.rand). Test mode is the identity.
    Returns out (x's shape) and cache (dropout_param, mask).
    """
    x = as_float_array(x)
    p = dropout_param.get("p")
    mode = dropout_param.get("mode")
    check_keep_probability(p, "dropout_param['p'] (keep probability)")
    if mode not in ("train", "test"):
        raise ValueError(f"dropout_param['mode'] must be 'train' or 'test', got {mode!r}")
    if mode == "test" or p == 1:
        return x, (dropout_param, None)
    rng = dropout_param.get("rng") or CourseRandom(dropout_param.get("seed")).generator
    mask = (uniform(rng, x.shape, like=x) < p).astype(x.dtype) / x.dtype.type(p)
    return x * mask, (dropout_param, mask)


def dropout_backward(dout, cache):
    """dout: the forward output's shape. Returns dx (the identity in test mode)."""
    _, mask = cache
    return dout if mask is None else check_dout(dout, mask.shape) * mask


# ----------------------------------------------------------------------------- convolution


def _pad_spatial(x, pad):
    return get_array_module(x).pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


def conv_forward_naive(x, w, b, conv_param):
    """Convolution (cross-correlation), one output position at a time.

    x: (N, C, H, W); w: (F, C, HH, WW); b: (F,) or None (no bias);
    conv_param: 'stride', 'pad' (zero padding on every side).
    Returns out (N, F, H', W') with H' = 1 + (H + 2 pad - HH) // stride, and cache.
    """
    x, w, b, (stride, pad, H_out, W_out) = check_conv_operands(x, w, b, conv_param)
    N = x.shape[0]
    F, _, HH, WW = w.shape

    xp = get_array_module(x)
    x_pad = _pad_spatial(x, pad)
    out = xp.empty((N, F, H_out, W_out), dtype=x.dtype)
    for i in range(H_out):
        for j in range(W_out):
            window = x_pad[:, :, i * stride : i * stride + HH, j * stride : j * stride + WW]
            out[:, :, i, j] = xp.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3]))  # (N, F)
    if b is not None:
        out += b[:, None, None]
    return out, (x, w, b, conv_param)


def conv_backward_naive(dout, cache):
    """dout: (N, F, H', W'). Returns dx (N, C, H, W), dw (F, C, HH, WW), db (F,) or None."""
    x, w, b, conv_param = cache
    _, _, _, (stride, pad, H_out, W_out) = check_conv_operands(x, w, b, conv_param)
    _, _, HH, WW = w.shape
    dout = check_dout(dout, (x.shape[0], w.shape[0], H_out, W_out))
    xp = get_array_module(x)
    x_pad = _pad_spatial(x, pad)
    dx_pad = xp.zeros_like(x_pad)
    dw = xp.zeros_like(w)
    for i in range(H_out):
        for j in range(W_out):
            rows = slice(i * stride, i * stride + HH)
            cols = slice(j * stride, j * stride + WW)
            d = dout[:, :, i, j]  # (N, F)
            dw += xp.tensordot(d, x_pad[:, :, rows, cols], axes=([0], [0]))
            dx_pad[:, :, rows, cols] += xp.tensordot(d, w, axes=([1], [0]))
    dx = dx_pad[:, :, pad : pad + x.shape[2], pad : pad + x.shape[3]]
    db = None if b is None else dout.sum(axis=(0, 2, 3))
    return xp.ascontiguousarray(dx), dw, db


# ----------------------------------------------------------------------------- pooling


def max_pool_forward_naive(x, pool_param):
    """Max pooling, one output position at a time.

    x: (N, C, H, W); pool_param: 'pool_height', 'pool_width', 'stride'.
    Returns out (N, C, H', W') with H' = 1 + (H - pool_height) // stride, and cache.
    """
    x, (ph, pw, stride, H_out, W_out) = check_pool_input(x, pool_param)
    N, C = x.shape[:2]
    out = get_array_module(x).empty((N, C, H_out, W_out), dtype=x.dtype)
    for i in range(H_out):
        for j in range(W_out):
            window = x[:, :, i * stride : i * stride + ph, j * stride : j * stride + pw]
            out[:, :, i, j] = window.max(axis=(2, 3))
    return out, (x, pool_param)


def max_pool_backward_naive(dout, cache):
    """Routes each output gradient to the (first) maximum of its window. Returns dx."""
    x, pool_param = cache
    x, (ph, pw, stride, H_out, W_out) = check_pool_input(x, pool_param)
    N, C = x.shape[:2]
    dout = check_dout(dout, (N, C, H_out, W_out))
    xp = get_array_module(x)
    dx = xp.zeros_like(x)
    positions = xp.arange(ph * pw)  # of a value inside its window, row by row
    for i in range(H_out):
        for j in range(W_out):
            rows = slice(i * stride, i * stride + ph)
            cols = slice(j * stride, j * stride + pw)
            window = x[:, :, rows, cols].reshape(N, C, ph * pw)
            one_hot = window.argmax(axis=2)[..., None] == positions  # (N, C, ph pw)
            dx[:, :, rows, cols] += (one_hot * dout[:, :, i, j][..., None]).reshape(N, C, ph, pw)
    return dx


def avg_pool_forward_naive(x, pool_param):
    """Average pooling, one output position at a time; pool_param as for max pooling."""
    x, (ph, pw, stride, H_out, W_out) = check_pool_input(x, pool_param)
    N, C = x.shape[:2]
    out = get_array_module(x).empty((N, C, H_out, W_out), dtype=x.dtype)
    for i in range(H_out):
        for j in range(W_out):
            out[:, :, i, j] = x[
                :, :, i * stride : i * stride + ph, j * stride : j * stride + pw
            ].mean(axis=(2, 3))
    return out, (x.shape, x.dtype, pool_param)


def avg_pool_backward_naive(dout, cache):
    """Spreads each output gradient evenly over its window. Returns dx."""
    x_shape, dtype, pool_param = cache
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    H_out, W_out = pool_output_size(x_shape[2], x_shape[3], ph, pw, stride)
    dout = check_dout(dout, (*x_shape[:2], H_out, W_out))
    dx = get_array_module(dout).zeros(x_shape, dtype=dtype)
    for i in range(H_out):
        for j in range(W_out):
            share = dout[:, :, i, j][:, :, None, None] / (ph * pw)
            dx[:, :, i * stride : i * stride + ph, j * stride : j * stride + pw] += share
    return dx


def global_avg_pool_forward(x):
    """Mean over each channel's spatial positions. x: (N, C, H, W) -> out (N, C)."""
    x = as_float_array(x, ndim=4)
    return x.mean(axis=(2, 3)), x.shape


def global_avg_pool_backward(dout, cache):
    """dout: (N, C). Returns dx (N, C, H, W)."""
    N, C, H, W = cache
    dout = check_dout(dout, (N, C))
    xp = get_array_module(dout)
    return xp.broadcast_to((dout / (H * W))[:, :, None, None], (N, C, H, W)).copy()
