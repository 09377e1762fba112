"""k-nearest-neighbour classifier with L2 distance (CS231n assignment 1).

Three ways to compute the (num_test, num_train) distance matrix, from readable to fast:
two loops, one loop, and none (expanding ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2).
"""

import numpy as np

from convlab._checks import check_count, check_labels

__all__ = ["KNearestNeighbor"]


class KNearestNeighbor:
    """kNN with L2 distance; ``train`` only memorises the data."""

    def __init__(self):
        self.X_train = None
        self.y_train = None

    def train(self, X, y):
        """Remember X (num_train, D) and its labels y (num_train,)."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be (num_train, D), got shape {X.shape}")
        self.X_train, self.y_train = X, check_labels(y, len(X))

    def predict(self, X, k=1, num_loops=0):
        """Labels (num_test,) of X (num_test, D): the most common label among the k
        nearest training examples (ties go to the smallest label); num_loops picks the
        distance implementation (0, 1 or 2)."""
        methods = {0: self.compute_distances_no_loops, 1: self.compute_distances_one_loop,
                   2: self.compute_distances_two_loops}
        if num_loops not in methods:
            raise ValueError(f"num_loops must be 0, 1 or 2, got {num_loops!r}")
        return self.predict_labels(methods[num_loops](X), k=k)

    def _test_data(self, X):
        if self.X_train is None:
            raise ValueError("train() the classifier before computing distances")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.X_train.shape[1]:
            raise ValueError(f"X must be (num_test, {self.X_train.shape[1]}), got {X.shape}")
        return X

    def compute_distances_two_loops(self, X):
        """dists[i, j] = L2 distance between test i and training example j, entry by entry."""
        X = self._test_data(X)
        dists = np.zeros((X.shape[0], self.X_train.shape[0]))
        for i in range(X.shape[0]):
            for j in range(self.X_train.shape[0]):
                dists[i, j] = np.sqrt(np.sum((X[i] - self.X_train[j]) ** 2))
        return dists

    def compute_distances_one_loop(self, X):
        """The same matrix, one test row at a time (broadcasting over training rows)."""
        X = self._test_data(X)
        dists = np.zeros((X.shape[0], self.X_train.shape[0]))
        for i in range(X.shape[0]):
            dists[i] = np.sqrt(np.sum((self.X_train - X[i]) ** 2, axis=1))
        return dists

    def compute_distances_no_loops(self, X):
        """The same matrix from one matrix product: ||x||^2 - 2 x.t + ||t||^2."""
        X = self._test_data(X).astype(np.float64)
        T = self.X_train.astype(np.float64)
        squared = (np.sum(X ** 2, axis=1)[:, None] - 2 * X.dot(T.T)
                   + np.sum(T ** 2, axis=1)[None, :])          # (num_test, num_train)
        # Round-off can leave a tiny negative where a distance is 0.
        return np.sqrt(np.maximum(squared, 0))

    def predict_labels(self, dists, k=1):
        """Labels (num_test,) from a distance matrix: majority vote of the k nearest."""
        check_count("k", k, allow_zero=False)
        dists = np.asarray(dists)
        if dists.ndim != 2 or dists.shape[1] != len(self.y_train):
            raise ValueError(f"dists must be (num_test, {len(self.y_train)}), got {dists.shape}")
        k = min(k, dists.shape[1])
        nearest = np.argsort(dists, axis=1, kind="stable")[:, :k]
        closest_y = self.y_train[nearest]                        # (num_test, k)
        return np.array([np.bincount(row).argmax() for row in closest_y], dtype=np.int64)
