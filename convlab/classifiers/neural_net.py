"""The two-layer network of CS231n assignment 1 (2017-2019 editions): ``TwoLayerNet``.

Unlike ``convlab.classifiers.fc_net.TwoLayerNet`` (assignment 2's, with a Solver), this one
keeps the older interface: weights in ``params`` as W1 (D, H), b1 (H,), W2 (H, C), b2 (C,),
``loss(X, y=None, reg=0.0)`` with the L2 term ``reg * (sum W1^2 + sum W2^2)``, and its own
``train(...)`` returning a stats dict, and ``predict``. The architecture is
input - affine - ReLU - affine - softmax.
"""

import numpy as np

from convlab._checks import check_count, check_labels
from convlab._course_random import CourseRandom

__all__ = ["TwoLayerNet"]


class TwoLayerNet:
    """input (D) - affine - ReLU - affine (C) - softmax; weights N(0, std^2), biases 0.

    Without ``seed`` the weights and the training minibatches come from NumPy's global
    random state as in the course (np.random.seed reproduces its numbers); with a seed,
    from the model's own Generator."""

    def __init__(self, input_size, hidden_size, output_size, std=1e-4, seed=None):
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("output_size", output_size)):
            check_count(name, value, allow_zero=False)
        self.random = CourseRandom(seed)
        self.params = {
            "W1": std * self.random.randn(input_size, hidden_size),
            "b1": np.zeros(hidden_size),
            "W2": std * self.random.randn(hidden_size, output_size),
            "b2": np.zeros(output_size),
        }

    def loss(self, X, y=None, reg=0.0):
        """Scores (N, C) when y is None; else (loss, grads) with grads for every param.

        X: (N, D), y: (N,) in [0, C)."""
        W1, b1, W2, b2 = (self.params[k] for k in ("W1", "b1", "W2", "b2"))
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != W1.shape[0]:
            raise ValueError(f"X must be (N, {W1.shape[0]}), got shape {X.shape}")
        N = X.shape[0]
        hidden = np.maximum(0, X.dot(W1) + b1)                  # (N, H)
        scores = hidden.dot(W2) + b2                            # (N, C)
        if y is None:
            return scores
        y = check_labels(y, N, W2.shape[1])
        shifted = scores - scores.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = -log_probs[np.arange(N), y].mean() + reg * (np.sum(W1 * W1) + np.sum(W2 * W2))

        dscores = np.exp(log_probs)
        dscores[np.arange(N), y] -= 1
        dscores /= N
        grads = {"W2": hidden.T.dot(dscores) + 2 * reg * W2, "b2": dscores.sum(axis=0)}
        dhidden = dscores.dot(W2.T) * (hidden > 0)              # back through the ReLU
        grads["W1"] = X.T.dot(dhidden) + 2 * reg * W1
        grads["b1"] = dhidden.sum(axis=0)
        return float(loss), grads

    def train(self, X, y, X_val, y_val, learning_rate=1e-3, learning_rate_decay=0.95,
              reg=5e-6, num_iters=100, batch_size=200, verbose=False):
        """Minibatch SGD; after each epoch the learning rate is multiplied by
        learning_rate_decay and the train (batch) and val accuracies are recorded.

        Returns {'loss_history', 'train_acc_history', 'val_acc_history'}."""
        X = np.asarray(X)
        y = check_labels(y, len(X))
        check_count("num_iters", num_iters)
        check_count("batch_size", batch_size, allow_zero=False)
        num_train = X.shape[0]
        iterations_per_epoch = max(num_train / batch_size, 1)
        loss_history, train_acc_history, val_acc_history = [], [], []
        for it in range(num_iters):
            batch = self.random.choice(num_train, batch_size)
            X_batch, y_batch = X[batch], y[batch]
            loss, grads = self.loss(X_batch, y=y_batch, reg=reg)
            if not np.isfinite(loss):
                raise FloatingPointError(f"loss is {loss} at iteration {it + 1}: training "
                                         "diverged (lower the learning rate)")
            loss_history.append(loss)
            for name in self.params:
                self.params[name] -= learning_rate * grads[name]
            if verbose and it % 100 == 0:
                print(f"iteration {it} / {num_iters}: loss {loss:f}")
            if it % iterations_per_epoch == 0:
                train_acc_history.append(float((self.predict(X_batch) == y_batch).mean()))
                val_acc_history.append(float((self.predict(X_val) == np.asarray(y_val)).mean()))
                learning_rate *= learning_rate_decay
        return {"loss_history": loss_history, "train_acc_history": train_acc_history,
                "val_acc_history": val_acc_history}

    def predict(self, X):
        """Predicted labels (N,) of X (N, D)."""
        return np.argmax(self.loss(X), axis=1)

    def save(self, fname):
        """Write the parameters to ``fname`` (.npz, never a pickle)."""
        from convlab.serialization import save_arrays

        save_arrays(fname, self.params, "neural_net.TwoLayerNet")
        print(f"{fname} saved.")

    def load(self, fname):
        """Read parameters saved by :meth:`save` from ``fname``; their shapes must be this
        net's. Returns True."""
        from convlab.serialization import load_arrays

        loaded = load_arrays(fname, "neural_net.TwoLayerNet", list(self.params))
        for name, value in loaded.items():
            if value.shape != self.params[name].shape:
                raise ValueError(f"{fname}: {name} has shape {value.shape}, this net's is "
                                 f"{self.params[name].shape}")
        self.params.update(loaded)
        print(f"{fname} loaded.")
        return True
