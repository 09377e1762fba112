"""Softmax (cross-entropy) loss of a linear classifier (CS231n assignment 1), naive and
vectorised.

Shapes: W (D, C), X (N, D), y (N,). The loss is the mean of -log softmax(x_i W)_{y_i} plus
``reg * sum(W * W)``. Scores are shifted by their row maximum before exponentiating, which
changes no probability and keeps exp from overflowing.
"""

import numpy as np

from convlab.classifiers.linear_svm import _check

__all__ = ["softmax_loss_naive", "softmax_loss_vectorized"]


def softmax_loss_naive(W, X, y, reg):
    """Softmax loss and dW by an explicit loop over examples. Returns (loss, dW)."""
    y = _check(W, X, y)
    dW = np.zeros(W.shape, dtype=np.result_type(W, X, float))
    num_train = X.shape[0]
    loss = 0.0
    for i in range(num_train):
        scores = X[i].dot(W)
        scores = scores - np.max(scores)
        probs = np.exp(scores) / np.sum(np.exp(scores))       # (C,)
        loss -= np.log(probs[y[i]])
        probs[y[i]] -= 1                                        # d loss_i / d scores
        dW += np.outer(X[i], probs)
    loss = loss / num_train + reg * np.sum(W * W)
    dW = dW / num_train + 2 * reg * W
    return float(loss), dW


def softmax_loss_vectorized(W, X, y, reg):
    """The same loss and gradient with no explicit loop. Returns (loss, dW)."""
    y = _check(W, X, y)
    N = X.shape[0]
    scores = X.dot(W)
    scores = scores - scores.max(axis=1, keepdims=True)
    log_probs = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))    # (N, C)
    loss = -log_probs[np.arange(N), y].mean() + reg * np.sum(W * W)
    dscores = np.exp(log_probs)
    dscores[np.arange(N), y] -= 1
    dW = X.T.dot(dscores) / N + 2 * reg * W
    return float(loss), dW
