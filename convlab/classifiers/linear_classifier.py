"""Linear classifiers trained by minibatch SGD (CS231n assignment 1): ``LinearSVM`` and
``Softmax``, sharing ``LinearClassifier.train`` / ``predict``.

X is (N, D) with examples as rows (append a column of ones for a bias, as the course
does), W is (D, C). Randomness follows the course: without a ``seed`` the initial weights
and the minibatches come from NumPy's global random state in the course's call order
(so ``np.random.seed(...)`` in a notebook reproduces its published numbers); with a seed
they come from the classifier's own Generator.
"""

import numpy as np

from convlab._checks import check_count, check_labels
from convlab._course_random import CourseRandom
from convlab.classifiers.linear_svm import svm_loss_vectorized
from convlab.classifiers.softmax import softmax_loss_vectorized

__all__ = ["LinearClassifier", "LinearSVM", "Softmax"]


class LinearClassifier:
    """Base class: subclasses define ``loss(X_batch, y_batch, reg) -> (loss, dW)``."""

    def __init__(self, seed=None):
        self.W = None
        self.random = CourseRandom(seed)

    def train(self, X, y, learning_rate=1e-3, reg=1e-5, num_iters=100, batch_size=200,
              verbose=False):
        """Minibatch SGD on the loss; W starts at 0.001 * N(0, 1) on the first call.

        X: (N, D), y: (N,) in [0, C) with C = max(y) + 1. Each step samples batch_size
        examples with replacement. Returns the loss of every iteration (a list)."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be (N, D), got shape {X.shape}")
        y = check_labels(y, len(X))
        check_count("num_iters", num_iters)
        check_count("batch_size", batch_size, allow_zero=False)
        num_train, dim = X.shape
        num_classes = int(np.max(y)) + 1
        if self.W is None:
            self.W = 0.001 * self.random.randn(dim, num_classes)
        elif self.W.shape != (dim, num_classes):
            raise ValueError(f"W is {self.W.shape} from an earlier train(); this data needs "
                             f"{(dim, num_classes)}")
        loss_history = []
        for it in range(num_iters):
            batch = self.random.choice(num_train, batch_size)
            loss, grad = self.loss(X[batch], y[batch], reg)
            if not np.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at iteration {it + 1}: training "
                                         "diverged (lower the learning rate)")
            loss_history.append(loss)
            self.W -= learning_rate * grad
            if verbose and it % 100 == 0:
                print(f"iteration {it} / {num_iters}: loss {loss:f}")
        return loss_history

    def predict(self, X):
        """Predicted labels (N,) of X (N, D): the class with the highest score."""
        if self.W is None:
            raise ValueError("train() the classifier before predict()")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.W.shape[0]:
            raise ValueError(f"X must be (N, {self.W.shape[0]}), got shape {X.shape}")
        return np.argmax(X.dot(self.W), axis=1)

    def save(self, fname):
        """Write W to ``fname`` (.npz, never a pickle), as cs231n 2025's ``save``; the
        course writes into its package, convlab where you say."""
        from convlab.serialization import save_arrays

        if self.W is None:
            raise ValueError("train() the classifier before save()")
        save_arrays(fname, {"W": self.W}, type(self).__name__)
        print(f"{fname} saved.")

    def load(self, fname):
        """Read W saved by :meth:`save` of this class from ``fname``; returns True."""
        from convlab.serialization import load_arrays

        self.W = load_arrays(fname, type(self).__name__, ["W"])["W"]
        print(f"{fname} loaded.")
        return True

    def loss(self, X_batch, y_batch, reg):
        """(loss, dW) of a minibatch; defined by the subclasses."""
        raise NotImplementedError(f"{type(self).__name__} must define loss()")


class LinearSVM(LinearClassifier):
    """A linear classifier with the multiclass SVM (hinge) loss."""

    def loss(self, X_batch, y_batch, reg):
        """Multiclass SVM loss and dW (convlab.classifiers.linear_svm)."""
        return svm_loss_vectorized(self.W, X_batch, y_batch, reg)


class Softmax(LinearClassifier):
    """A linear classifier with the softmax cross-entropy loss."""

    def loss(self, X_batch, y_batch, reg):
        """Softmax loss and dW (convlab.classifiers.softmax)."""
        return softmax_loss_vectorized(self.W, X_batch, y_batch, reg)
