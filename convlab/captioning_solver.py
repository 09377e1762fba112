"""CaptioningSolver: trains a CaptioningRNN on minibatches of captions (the course's
``cs231n/captioning_solver.py``)."""

import numpy as np

from convlab import optim
from convlab._course_random import CourseRandom
from convlab.coco_utils import sample_coco_minibatch

__all__ = ["CaptioningSolver"]

_DEFAULTS = dict(update_rule="sgd", optim_config=None, lr_decay=1.0, batch_size=100,
                 num_epochs=10, print_every=10, verbose=True, seed=None)


class CaptioningSolver:
    """Minibatch gradient descent for a captioning model.

    ``data`` is a captioning data set (convlab.data.load_builtin_captions, or the course's
    load_coco_data); ``model`` has ``params`` and ``loss(features, captions) -> (loss,
    grads)``. Keywords (defaults in brackets): ``update_rule`` ['sgd'] (a name in
    convlab.optim or a callable), ``optim_config`` [{}], ``lr_decay`` [1.0] (per epoch),
    ``batch_size`` [100], ``num_epochs`` [10], ``print_every`` [10], ``verbose`` [True],
    ``seed`` [None] (minibatches from the solver's own Generator; None: from NumPy's global
    state, as the course draws them).

    An epoch is (number of training captions) // batch_size steps. ``loss_history`` holds
    every step's loss; a non-finite loss raises FloatingPointError naming the iteration.
    """

    def __init__(self, model, data, **kwargs):
        unknown = set(kwargs) - set(_DEFAULTS)
        if unknown:
            raise ValueError(f"Unrecognized arguments {', '.join(sorted(unknown))}")
        if "train_captions" not in data:
            raise ValueError("data must be a captioning data set with 'train_captions'")
        self.model, self.data = model, data
        for key, default in _DEFAULTS.items():
            setattr(self, key, kwargs.get(key, default))
        self.optim_config = dict(self.optim_config or {})
        self.update_rule = optim.get_update_rule(self.update_rule)
        if int(self.batch_size) < 1 or int(self.num_epochs) < 0:
            raise ValueError("batch_size must be >= 1 and num_epochs >= 0")
        self._reset()

    def _reset(self):
        self.epoch = 0
        self.loss_history = []
        self.random = CourseRandom(self.seed)
        self.optim_configs = {name: dict(self.optim_config) for name in self.model.params}

    def _step(self):
        rng = self.random.generator if self.random.seeded else None
        captions, features, _ = sample_coco_minibatch(self.data, self.batch_size, "train", rng)
        loss, grads = self.model.loss(features, captions)
        if not np.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at iteration {len(self.loss_history) + 1}:"
                                     " training diverged (try a smaller learning rate)")
        self.loss_history.append(float(loss))
        for name, w in self.model.params.items():
            self.model.params[name], self.optim_configs[name] = self.update_rule(
                w, grads[name], self.optim_configs[name])

    def train(self):
        """Run num_epochs epochs of updates, printing the loss every print_every steps."""
        num_train = self.data["train_captions"].shape[0]
        iterations_per_epoch = max(num_train // self.batch_size, 1)
        num_iterations = self.num_epochs * iterations_per_epoch
        for t in range(num_iterations):
            self._step()
            if self.verbose and self.print_every and t % self.print_every == 0:
                print(f"(Iteration {t + 1} / {num_iterations}) loss: {self.loss_history[-1]:f}")
            if (t + 1) % iterations_per_epoch == 0:
                self.epoch += 1
                for config in self.optim_configs.values():
                    if "learning_rate" in config:
                        config["learning_rate"] *= self.lr_decay
