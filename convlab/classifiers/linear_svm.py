"""Multiclass SVM loss of a linear classifier (CS231n assignment 1), naive and vectorised.

Shapes: W (D, C) weights, X (N, D) examples as rows, y (N,) labels in [0, C). The loss is
the mean over examples of sum_{j != y_i} max(0, s_j - s_{y_i} + 1) with s = x_i W, plus
``reg * sum(W * W)`` (the course's convention: its gradient is 2 reg W).
"""

import numpy as np

from convlab._checks import check_labels

__all__ = ["svm_loss_naive", "svm_loss_vectorized"]


def _check(W, X, y):
    """y as int labels, after checking W (D, C), X (N, D) and y (N,) in [0, C)."""
    if W.ndim != 2 or X.ndim != 2 or X.shape[1] != W.shape[0]:
        raise ValueError(f"expected W (D, C) and X (N, D); got W {W.shape}, X {X.shape}")
    return check_labels(y, len(X), W.shape[1])


def svm_loss_naive(W, X, y, reg):
    """SVM loss and dW by explicit loops over examples and classes. Returns (loss, dW)."""
    y = _check(W, X, y)
    dW = np.zeros(W.shape, dtype=np.result_type(W, X, float))
    num_classes, num_train = W.shape[1], X.shape[0]
    loss = 0.0
    for i in range(num_train):
        scores = X[i].dot(W)
        correct = scores[y[i]]
        for j in range(num_classes):
            if j == y[i]:
                continue
            margin = scores[j] - correct + 1  # delta = 1
            if margin > 0:
                loss += margin
                dW[:, j] += X[i]       # d margin / d W_j
                dW[:, y[i]] -= X[i]    # d margin / d W_{y_i}
    loss = loss / num_train + reg * np.sum(W * W)
    dW = dW / num_train + 2 * reg * W
    return float(loss), dW


def svm_loss_vectorized(W, X, y, reg):
    """The same loss and gradient with no explicit loop. Returns (loss, dW)."""
    y = _check(W, X, y)
    N = X.shape[0]
    scores = X.dot(W)                                           # (N, C)
    margins = np.maximum(0, scores - scores[np.arange(N), y][:, None] + 1)
    margins[np.arange(N), y] = 0
    loss = margins.sum() / N + reg * np.sum(W * W)
    # Each positive margin adds x_i to its class's column and subtracts it from y_i's.
    coeff = (margins > 0).astype(scores.dtype)                  # (N, C)
    coeff[np.arange(N), y] = -coeff.sum(axis=1)
    dW = X.T.dot(coeff) / N + 2 * reg * W
    return float(loss), dW
