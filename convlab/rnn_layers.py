"""Recurrent layers (the course's ``cs231n/rnn_layers.py``): vanilla RNN and LSTM steps and
sequences, word embeddings, and the temporal affine layer and softmax loss that sit on top.

Shapes: N sequences per minibatch, T time steps, D input features, H hidden units, V words.
Every ``*_forward`` returns ``(out, cache)`` and its ``*_backward(dout, cache)`` the gradients
of the forward's inputs, in the order of its arguments. Mixed or integer operands are
promoted as in :mod:`convlab.layers`.
"""

import numpy as np

from convlab._checks import as_float_array, check_dout, check_labels, float_operands

__all__ = [
    "lstm_backward",
    "lstm_forward",
    "lstm_step_backward",
    "lstm_step_forward",
    "rnn_backward",
    "rnn_forward",
    "rnn_step_backward",
    "rnn_step_forward",
    "sigmoid",
    "temporal_affine_backward",
    "temporal_affine_forward",
    "temporal_softmax_loss",
    "word_embedding_backward",
    "word_embedding_forward",
]


def _check_recurrent_weights(x, h, Wx, Wh, b, gates):
    """ValueError unless x (N, D), h (N, H), Wx (D, gates H), Wh (H, gates H), b (gates H,)."""
    N, D = x.shape
    H = h.shape[1]
    expected = {"prev_h": (N, H), "Wx": (D, gates * H), "Wh": (H, gates * H), "b": (gates * H,)}
    for name, array in (("prev_h", h), ("Wx", Wx), ("Wh", Wh), ("b", b)):
        if array.shape != expected[name]:
            raise ValueError(f"{name} must have shape {expected[name]} for x of shape "
                             f"{x.shape} and {H} hidden units, got {array.shape}")


def _sequence_operands(x, h0, Wx, Wh, b, gates):
    """x (N, T, D), h0 (N, H) and the weights in one float dtype, shapes checked."""
    x, h0, Wx, Wh, b = float_operands(x=x, h0=h0, Wx=Wx, Wh=Wh, b=b)
    if x.ndim != 3 or h0.ndim != 2:
        raise ValueError(f"x must be (N, T, D) and h0 (N, H), got {x.shape} and {h0.shape}")
    _check_recurrent_weights(x[:, 0], h0, Wx, Wh, b, gates)
    return x, h0, Wx, Wh, b


# ----------------------------------------------------------------------------- vanilla RNN


def rnn_step_forward(x, prev_h, Wx, Wh, b):
    """One step of a vanilla RNN: next_h = tanh(x Wx + prev_h Wh + b).

    x: (N, D); prev_h: (N, H); Wx: (D, H); Wh: (H, H); b: (H,).
    Returns next_h (N, H) and cache (x, prev_h, Wx, Wh, next_h).
    """
    x, prev_h, Wx, Wh, b = float_operands(x=x, prev_h=prev_h, Wx=Wx, Wh=Wh, b=b)
    if x.ndim != 2 or prev_h.ndim != 2:
        raise ValueError(f"x must be (N, D) and prev_h (N, H), got {x.shape} and {prev_h.shape}")
    _check_recurrent_weights(x, prev_h, Wx, Wh, b, gates=1)
    next_h = np.tanh(x @ Wx + prev_h @ Wh + b)
    return next_h, (x, prev_h, Wx, Wh, next_h)


def rnn_step_backward(dnext_h, cache):
    """dnext_h: (N, H). Returns dx (N, D), dprev_h (N, H), dWx (D, H), dWh (H, H), db (H,)."""
    x, prev_h, Wx, Wh, next_h = cache
    dnext_h = check_dout(dnext_h, next_h.shape)
    da = dnext_h * (1 - next_h**2)  # tanh' = 1 - tanh^2, from the output we kept
    return da @ Wx.T, da @ Wh.T, x.T @ da, prev_h.T @ da, da.sum(axis=0)


def rnn_forward(x, h0, Wx, Wh, b):
    """A vanilla RNN over a whole sequence, one rnn_step_forward per time step.

    x: (N, T, D); h0: (N, H) the initial hidden state; Wx: (D, H); Wh: (H, H); b: (H,).
    Returns h (N, T, H), the hidden state at every step, and cache (the steps' caches).
    """
    x, h0, Wx, Wh, b = _sequence_operands(x, h0, Wx, Wh, b, gates=1)
    N, T, _ = x.shape
    h = np.empty((N, T, h0.shape[1]), dtype=x.dtype)
    prev_h, caches = h0, []
    for t in range(T):
        prev_h, step_cache = rnn_step_forward(x[:, t], prev_h, Wx, Wh, b)
        h[:, t] = prev_h
        caches.append(step_cache)
    return h, (x.shape, h0.shape, caches)


def rnn_backward(dh, cache):
    """dh: (N, T, H), the upstream gradient of every hidden state (not the recurrence).
    Returns dx (N, T, D), dh0 (N, H), dWx (D, H), dWh (H, H), db (H,)."""
    x_shape, h0_shape, caches = cache
    N, T, D = x_shape
    dh = check_dout(dh, (N, T, h0_shape[1]))
    _, _, Wx, Wh, _ = caches[0]
    dx = np.empty(x_shape, dtype=Wx.dtype)
    dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros(Wh.shape[1], dtype=Wh.dtype)
    dprev_h = np.zeros(h0_shape, dtype=Wx.dtype)  # gradient flowing back through time
    for t in reversed(range(T)):
        dx[:, t], dprev_h, dWx_t, dWh_t, db_t = rnn_step_backward(dh[:, t] + dprev_h, caches[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dx, dprev_h, dWx, dWh, db


# ----------------------------------------------------------------------------- embeddings


def word_embedding_forward(x, W):
    """Look up each word's vector: out[n, t] = W[x[n, t]].

    x: (N, T) integer word indices in [0, V); W: (V, D). Returns out (N, T, D), cache (x, W).
    """
    x = np.asarray(x)
    (W,) = float_operands(W=W)
    if W.ndim != 2:
        raise ValueError(f"W must be (V, D), got shape {W.shape}")
    if x.ndim != 2:
        raise ValueError(f"x must be (N, T) word indices, got shape {x.shape}")
    check_labels(x.ravel(), C=W.shape[0], name="word indices x")
    return W[x], (x, W)


def word_embedding_backward(dout, cache):
    """dout: (N, T, D). Returns dW (V, D): each word's rows of dout summed (np.add.at, because
    a word may occur many times in a minibatch)."""
    x, W = cache
    dout = check_dout(dout, (*x.shape, W.shape[1]))
    dW = np.zeros_like(W)
    np.add.at(dW, x, dout)
    return dW


# ----------------------------------------------------------------------------- LSTM


def sigmoid(x):
    """1 / (1 + exp(-x)), computed without overflow for large |x|."""
    x = as_float_array(x)
    out = np.empty_like(x)
    positive = x >= 0
    out[positive] = 1 / (1 + np.exp(-x[positive]))
    z = np.exp(x[~positive])  # exp of a negative number cannot overflow
    out[~positive] = z / (1 + z)
    return out


def lstm_step_forward(x, prev_h, prev_c, Wx, Wh, b):
    """One LSTM step. The activations a = x Wx + prev_h Wh + b (N, 4H) split into the input,
    forget and output gates i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o) and the block
    input g = tanh(a_g); next_c = f * prev_c + i * g, next_h = o * tanh(next_c).

    x: (N, D); prev_h, prev_c: (N, H); Wx: (D, 4H); Wh: (H, 4H); b: (4H,).
    Returns next_h, next_c (N, H) and cache.
    """
    x, prev_h, prev_c, Wx, Wh, b = float_operands(x=x, prev_h=prev_h, prev_c=prev_c, Wx=Wx,
                                                  Wh=Wh, b=b)
    if x.ndim != 2 or prev_h.ndim != 2:
        raise ValueError(f"x must be (N, D) and prev_h (N, H), got {x.shape} and {prev_h.shape}")
    if prev_c.shape != prev_h.shape:
        raise ValueError(f"prev_c must have prev_h's shape {prev_h.shape}, got {prev_c.shape}")
    _check_recurrent_weights(x, prev_h, Wx, Wh, b, gates=4)
    H = prev_h.shape[1]
    a = x @ Wx + prev_h @ Wh + b  # (N, 4H): [a_i | a_f | a_o | a_g]
    i, f, o = (sigmoid(a[:, k * H:(k + 1) * H]) for k in range(3))
    g = np.tanh(a[:, 3 * H:])
    next_c = f * prev_c + i * g
    tanh_c = np.tanh(next_c)
    next_h = o * tanh_c
    return next_h, next_c, (x, prev_h, prev_c, Wx, Wh, i, f, o, g, tanh_c)


def lstm_step_backward(dnext_h, dnext_c, cache):
    """dnext_h, dnext_c: (N, H). Returns dx (N, D), dprev_h, dprev_c (N, H), dWx (D, 4H),
    dWh (H, 4H), db (4H,)."""
    x, prev_h, prev_c, Wx, Wh, i, f, o, g, tanh_c = cache
    dnext_h = check_dout(dnext_h, prev_h.shape)
    dnext_c = check_dout(dnext_c, prev_c.shape)
    do = dnext_h * tanh_c
    dc = dnext_c + dnext_h * o * (1 - tanh_c**2)  # both paths into next_c
    di, df, dg = dc * g, dc * prev_c, dc * i
    # Through the nonlinearities: sigmoid' = s (1 - s), tanh' = 1 - tanh^2.
    da = np.hstack([di * i * (1 - i), df * f * (1 - f), do * o * (1 - o), dg * (1 - g**2)])
    return da @ Wx.T, da @ Wh.T, dc * f, x.T @ da, prev_h.T @ da, da.sum(axis=0)


def lstm_forward(x, h0, Wx, Wh, b):
    """An LSTM over a whole sequence; the cell state starts at zero.

    x: (N, T, D); h0: (N, H); Wx: (D, 4H); Wh: (H, 4H); b: (4H,).
    Returns h (N, T, H) and cache (the steps' caches).
    """
    x, h0, Wx, Wh, b = _sequence_operands(x, h0, Wx, Wh, b, gates=4)
    N, T, _ = x.shape
    h = np.empty((N, T, h0.shape[1]), dtype=x.dtype)
    prev_h, prev_c, caches = h0, np.zeros_like(h0), []
    for t in range(T):
        prev_h, prev_c, step_cache = lstm_step_forward(x[:, t], prev_h, prev_c, Wx, Wh, b)
        h[:, t] = prev_h
        caches.append(step_cache)
    return h, (x.shape, h0.shape, caches)


def lstm_backward(dh, cache):
    """dh: (N, T, H). Returns dx (N, T, D), dh0 (N, H), dWx (D, 4H), dWh (H, 4H), db (4H,)."""
    x_shape, h0_shape, caches = cache
    N, T, D = x_shape
    dh = check_dout(dh, (N, T, h0_shape[1]))
    Wx, Wh = caches[0][3], caches[0][4]
    dx = np.empty(x_shape, dtype=Wx.dtype)
    dWx, dWh, db = np.zeros_like(Wx), np.zeros_like(Wh), np.zeros(Wh.shape[1], dtype=Wh.dtype)
    dprev_h = np.zeros(h0_shape, dtype=Wx.dtype)
    dprev_c = np.zeros(h0_shape, dtype=Wx.dtype)
    for t in reversed(range(T)):
        dx[:, t], dprev_h, dprev_c, dWx_t, dWh_t, db_t = lstm_step_backward(
            dh[:, t] + dprev_h, dprev_c, caches[t])
        dWx += dWx_t
        dWh += dWh_t
        db += db_t
    return dx, dprev_h, dWx, dWh, db


# ----------------------------------------------------------------------------- temporal layers


def temporal_affine_forward(x, w, b):
    """The same affine layer at every time step: out[:, t] = x[:, t] w + b.

    x: (N, T, D); w: (D, M); b: (M,). Returns out (N, T, M) and cache (x, w).
    """
    x, w, b = float_operands(x=x, w=w, b=b)
    if x.ndim != 3 or w.ndim != 2 or w.shape[0] != x.shape[2] or b.shape != (w.shape[1],):
        raise ValueError(f"x must be (N, T, D), w (D, M) and b (M,), got {x.shape}, "
                         f"{w.shape} and {b.shape}")
    return x @ w + b, (x, w)


def temporal_affine_backward(dout, cache):
    """dout: (N, T, M). Returns dx (N, T, D), dw (D, M), db (M,)."""
    x, w = cache
    N, T, D = x.shape
    dout = check_dout(dout, (N, T, w.shape[1]))
    dx = dout @ w.T
    dw = x.reshape(N * T, D).T @ dout.reshape(N * T, -1)
    return dx, dw, dout.sum(axis=(0, 1))


def temporal_softmax_loss(x, y, mask, verbose=False):
    """Softmax cross-entropy at every time step where ``mask`` is true, summed over time and
    averaged over the minibatch (the course's normalisation: divided by N, not by the number
    of words).

    x: (N, T, V) scores; y: (N, T) word indices in [0, V); mask: (N, T) booleans (false at
    padding). ``verbose`` prints dx's shape, as the course's version does.
    Returns loss (float) and dx (N, T, V).
    """
    x = as_float_array(x, ndim=3)
    N, T, V = x.shape
    y, mask = np.asarray(y), np.asarray(mask)
    if y.shape != (N, T) or mask.shape != (N, T):
        raise ValueError(f"y and mask must have shape {(N, T)}, got {y.shape} and {mask.shape}")
    y = check_labels(y.ravel(), C=V, name="y").reshape(N, T)
    mask = mask.astype(x.dtype)
    shifted = x - x.max(axis=2, keepdims=True)  # stable: exp never overflows
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=2, keepdims=True))  # (N, T, V)
    picked = np.take_along_axis(log_probs, y[..., None], axis=2)[..., 0]      # (N, T)
    loss = -(mask * picked).sum() / N
    dx = np.exp(log_probs)
    np.put_along_axis(dx, y[..., None], np.take_along_axis(dx, y[..., None], axis=2) - 1,
                      axis=2)
    dx *= mask[..., None] / N
    if verbose:
        print("dx_flat: ", dx.reshape(N * T, V).shape)
    return float(loss), dx
