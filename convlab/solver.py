"""Solver: trains a classifier with minibatch gradient descent.

The cs231n contract::

    solver = Solver(model, data, update_rule='sgd', optim_config={'learning_rate': 1e-3},
                    lr_decay=0.95, num_epochs=10, batch_size=100, print_every=100)
    solver.train()

``data`` holds ``X_train, y_train, X_val, y_val``; ``model`` has ``params`` and
``loss(X, y=None)``. After ``train()`` the model holds the parameters with the best
validation accuracy.

Beyond it (all optional keyword arguments):

- ``seed``: seeds the solver's own ``np.random.Generator`` (minibatches, accuracy subsamples,
  augmentation); NumPy's global random state is never used.
- ``shuffle=True``: each epoch visits every training example once in a fresh random order,
  instead of cs231n's independent random minibatches.
- ``lr_schedule``: ``'step'`` (multiply by ``lr_step_gamma``, default 0.1, every
  ``lr_step_epochs`` epochs, default a third of the run), ``'cosine'`` (cosine decay to 0),
  ``'onecycle'`` (linear warm-up from lr/25 over the first ``lr_warmup_frac``, default 0.3,
  of the run, then cosine decay to lr/1e4), or a callable ``f(iteration, num_iterations) ->
  multiplier``. Mutually exclusive with ``lr_decay``.
- ``weight_decay``: adds ``weight_decay * w`` to the gradient of every parameter with two or
  more dimensions (weights, not biases or batchnorm scales).
- ``augment``: a callable ``f(X_batch, rng) -> X_batch`` applied to training minibatches.
- ``progress``: show a tqdm progress bar (defaults to ``verbose``).
- ``on_epoch_end``: a callable ``f(solver)`` run after each epoch's accuracy check (e.g. to
  save a checkpoint or write metrics).
- ``save(path)`` / ``load(path)``: the whole training state (parameters, optimizer state,
  batchnorm statistics, histories, random state, position in the run) in one ``.npz``, so a
  loaded solver continues exactly where the saved one stopped.

A non-finite loss stops training with ``FloatingPointError`` naming the iteration.
Ctrl-C during ``train()`` finishes the current iteration, then raises KeyboardInterrupt, so
the state is consistent and can be saved.
"""

import math
import signal
import threading

import numpy as np

from convlab import optim
from convlab.serialization import atomic_savez, load_npz

SCHEDULES = ("step", "cosine", "onecycle")


class Solver:
    def __init__(self, model, data, **kwargs):
        self.model = model
        for key in ("X_train", "y_train", "X_val", "y_val"):
            if key not in data:
                raise ValueError(f"data must contain {key!r}")
        self.X_train, self.y_train = data["X_train"], data["y_train"]
        self.X_val, self.y_val = data["X_val"], data["y_val"]
        for split, X, y in (("train", self.X_train, self.y_train), ("val", self.X_val, self.y_val)):
            if len(X) != len(y):
                raise ValueError(f"X_{split} has {len(X)} examples but y_{split} has {len(y)}")
        if len(self.X_train) == 0:
            raise ValueError("X_train is empty")

        self.update_rule = kwargs.pop("update_rule", "sgd")
        self.optim_config = kwargs.pop("optim_config", {})
        self.lr_decay = kwargs.pop("lr_decay", 1.0)
        self.batch_size = kwargs.pop("batch_size", 100)
        self.num_epochs = kwargs.pop("num_epochs", 10)
        self.num_train_samples = kwargs.pop("num_train_samples", 1000)
        self.num_val_samples = kwargs.pop("num_val_samples", None)
        self.checkpoint_name = kwargs.pop("checkpoint_name", None)
        self.print_every = kwargs.pop("print_every", 10)
        self.verbose = kwargs.pop("verbose", True)
        self.seed = kwargs.pop("seed", None)
        self.shuffle = kwargs.pop("shuffle", False)
        self.lr_schedule = kwargs.pop("lr_schedule", None)
        self.lr_step_epochs = kwargs.pop("lr_step_epochs", None)
        self.lr_step_gamma = kwargs.pop("lr_step_gamma", 0.1)
        self.lr_warmup_frac = kwargs.pop("lr_warmup_frac", 0.3)
        self.weight_decay = kwargs.pop("weight_decay", 0.0)
        self.augment = kwargs.pop("augment", None)
        self.progress = kwargs.pop("progress", None)
        self.on_epoch_end = kwargs.pop("on_epoch_end", None)
        if kwargs:
            raise ValueError(f"Unrecognized arguments {', '.join(sorted(kwargs))}")

        if isinstance(self.update_rule, str):
            if self.update_rule not in optim.UPDATE_RULES:
                raise ValueError(
                    f'Invalid update_rule "{self.update_rule}"; choose one of '
                    f"{', '.join(optim.UPDATE_RULES)} or pass a callable"
                )
            self.update_rule = optim.UPDATE_RULES[self.update_rule]
        elif not callable(self.update_rule):
            raise ValueError("update_rule must be a name in convlab.optim or a callable")
        if not isinstance(self.lr_schedule, str) and not (
            self.lr_schedule is None or callable(self.lr_schedule)
        ):
            raise ValueError("lr_schedule must be None, a name or a callable")
        if isinstance(self.lr_schedule, str) and self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr_schedule is not None and self.lr_decay != 1.0:
            raise ValueError("use either lr_decay or lr_schedule, not both")
        if self.lr_schedule is not None and "learning_rate" not in self.optim_config:
            raise ValueError("lr_schedule needs optim_config['learning_rate'] as its base rate")
        if int(self.batch_size) < 1 or int(self.num_epochs) < 0:
            raise ValueError("batch_size must be >= 1 and num_epochs >= 0")
        if self.augment is not None and not callable(self.augment):
            raise ValueError("augment must be a callable f(X_batch, rng) -> X_batch")
        if self.progress is None:
            self.progress = self.verbose

        self._reset()

    # ------------------------------------------------------------------ state

    def _reset(self):
        """Book-keeping for a fresh run; train() starts from here, load() overwrites it."""
        self.epoch = 0
        self.best_val_acc = 0
        self.best_params = {}
        self._best_state = {}
        self.loss_history = []
        self.train_acc_history = []
        self.val_acc_history = []
        self.lr_history = []
        self.rng = np.random.default_rng(self.seed)
        self._iteration = 0
        self._epoch_order = None
        self.optim_configs = {name: dict(self.optim_config) for name in self.model.params}
        self._base_lr = {
            name: config.get("learning_rate") for name, config in self.optim_configs.items()
        }

    @property
    def iterations_per_epoch(self):
        return max(len(self.X_train) // self.batch_size, 1)

    @property
    def num_iterations(self):
        return self.num_epochs * self.iterations_per_epoch

    def _model_state(self):
        if hasattr(self.model, "state_dict"):
            return self.model.state_dict()
        return dict(self.model.params)

    def _load_model_state(self, state):
        if hasattr(self.model, "load_state_dict"):
            self.model.load_state_dict(state)
        else:
            self.model.params.update({name: state[name] for name in self.model.params})

    def save(self, path):
        """Write the complete training state to ``path`` (.npz), atomically."""
        arrays = {f"model.{k}": v for k, v in self._model_state().items()}
        arrays.update({f"best.{k}": v for k, v in self._best_state.items()})
        optim_scalars = {}
        for name, config in self.optim_configs.items():
            optim_scalars[name] = {}
            for key, value in config.items():
                if isinstance(value, np.ndarray):
                    arrays[f"optim.{name}.{key}"] = value
                else:
                    optim_scalars[name][key] = value
        if self._epoch_order is not None:
            arrays["epoch_order"] = self._epoch_order
        meta = {
            "format": "convlab-solver",
            "version": 1,
            "epoch": self.epoch,
            "iteration": self._iteration,
            "batch_size": self.batch_size,
            "num_train": len(self.X_train),
            "best_val_acc": self.best_val_acc,
            "loss_history": self.loss_history,
            "train_acc_history": self.train_acc_history,
            "val_acc_history": self.val_acc_history,
            "lr_history": self.lr_history,
            "optim_scalars": optim_scalars,
            "base_lr": self._base_lr,
            "rng_state": self.rng.bit_generator.state,
        }
        atomic_savez(path, arrays, meta)

    def load(self, path):
        """Restore the state written by save() into this solver and its model."""
        arrays, meta = load_npz(path)
        if meta.get("format") != "convlab-solver":
            raise ValueError(f"{path} is not a convlab solver checkpoint")
        if meta["batch_size"] != self.batch_size or meta["num_train"] != len(self.X_train):
            raise ValueError(
                f"{path} was saved with batch_size {meta['batch_size']} and "
                f"{meta['num_train']} training examples; this solver has {self.batch_size} "
                f"and {len(self.X_train)}"
            )

        def with_prefix(prefix):
            return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}

        self._load_model_state(with_prefix("model."))
        self._best_state = with_prefix("best.")
        self.best_params = {k: v for k, v in self._best_state.items() if k in self.model.params}
        self.optim_configs = {}
        for name, scalars in meta["optim_scalars"].items():
            config = dict(scalars)
            config.update(with_prefix(f"optim.{name}."))
            self.optim_configs[name] = config
        self._epoch_order = arrays.get("epoch_order")
        self.epoch = meta["epoch"]
        self._iteration = meta["iteration"]
        self.best_val_acc = meta["best_val_acc"]
        self.loss_history = meta["loss_history"]
        self.train_acc_history = meta["train_acc_history"]
        self.val_acc_history = meta["val_acc_history"]
        self.lr_history = meta["lr_history"]
        self._base_lr = meta["base_lr"]
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = meta["rng_state"]

    def _save_checkpoint(self):
        if self.checkpoint_name is None:
            return
        path = f"{self.checkpoint_name}_epoch_{self.epoch}.npz"
        if self.verbose:
            self._print(f'Saving checkpoint to "{path}"')
        self.save(path)

    # ------------------------------------------------------------------ training

    def _lr_multiplier(self, iteration):
        """Learning-rate multiplier for the schedule at ``iteration`` (0-based)."""
        total = max(self.num_iterations, 1)
        if callable(self.lr_schedule):
            return self.lr_schedule(iteration, total)
        progress = iteration / total
        if self.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if self.lr_schedule == "step":
            step_epochs = self.lr_step_epochs or max(self.num_epochs // 3, 1)
            return self.lr_step_gamma ** (iteration // self.iterations_per_epoch // step_epochs)
        # one-cycle: warm up linearly from 1/25 of the rate, then anneal along a cosine.
        warmup = self.lr_warmup_frac
        if progress < warmup:
            return 1 / 25 + (1 - 1 / 25) * progress / warmup
        tail = (progress - warmup) / (1 - warmup)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * tail))

    def _next_batch_indices(self):
        N, B = len(self.X_train), self.batch_size
        if not self.shuffle:
            return self.rng.choice(N, B)
        position = self._iteration % self.iterations_per_epoch
        if position == 0 or self._epoch_order is None:
            self._epoch_order = self.rng.permutation(N)
        return self._epoch_order[position * B : (position + 1) * B]

    def _step(self):
        """One gradient update on a minibatch."""
        batch = self._next_batch_indices()
        X_batch, y_batch = self.X_train[batch], self.y_train[batch]
        if self.augment is not None:
            X_batch = self.augment(X_batch, self.rng)

        loss, grads = self.model.loss(X_batch, y_batch)
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss} at iteration {self._iteration + 1}: training diverged "
                "(try a smaller learning rate or weight scale)"
            )
        if self.lr_schedule is not None:
            multiplier = self._lr_multiplier(self._iteration)
            for name, config in self.optim_configs.items():
                config["learning_rate"] = multiplier * self._base_lr[name]

        new_params = {}
        for name, w in self.model.params.items():
            dw = grads[name]
            if self.weight_decay and w.ndim > 1:
                dw = dw + self.weight_decay * w
            new_params[name], self.optim_configs[name] = self.update_rule(
                w, dw, self.optim_configs[name]
            )
        self.model.params.update(new_params)
        self.loss_history.append(float(loss))
        self.lr_history.append(
            float(next(iter(self.optim_configs.values())).get("learning_rate", float("nan")))
        )

    def check_accuracy(self, X, y, num_samples=None, batch_size=100):
        """Fraction of (a random subsample of num_samples of) X the model classifies as y."""
        N = len(X)
        if num_samples is not None and N > num_samples:
            mask = self.rng.choice(N, num_samples)
            X, y = X[mask], y[mask]
            N = num_samples
        if N == 0:
            return 0.0
        y_pred = np.concatenate(
            [
                np.argmax(self.model.loss(X[i : i + batch_size]), axis=1)
                for i in range(0, N, batch_size)
            ]
        )
        return float(np.mean(y_pred == y))

    def _print(self, line, bar=None):
        if bar is not None:
            bar.write(line)
        else:
            print(line)

    def _end_of_check(self, bar):
        train_acc = self.check_accuracy(self.X_train, self.y_train, self.num_train_samples)
        val_acc = self.check_accuracy(self.X_val, self.y_val, self.num_val_samples)
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        if self.verbose:
            self._print(
                f"(Epoch {self.epoch} / {self.num_epochs}) train acc: {train_acc:f}; "
                f"val_acc: {val_acc:f}",
                bar,
            )
        if val_acc > self.best_val_acc or not self._best_state:
            self.best_val_acc = max(val_acc, self.best_val_acc)
            self._best_state = {k: v.copy() for k, v in self._model_state().items()}
            self.best_params = {k: v for k, v in self._best_state.items() if k in self.model.params}
        self._save_checkpoint()

    def train(self):
        """Run (or continue) optimisation, then load the best parameters into the model."""
        num_iterations = self.num_iterations
        bar = None
        if self.progress:
            # Imported here: tqdm.auto warns inside Jupyter without ipywidgets even when unused.
            from tqdm.auto import tqdm

            bar = tqdm(total=num_iterations, initial=self._iteration, unit="it", leave=False)
        interrupted = threading.Event()
        previous_handler = None
        if threading.current_thread() is threading.main_thread():
            previous_handler = signal.signal(signal.SIGINT, lambda *_: interrupted.set())
        try:
            if self._iteration == 0:
                self._end_of_check(bar)
            while self._iteration < num_iterations:
                self._step()
                self._iteration += 1
                t = self._iteration
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{self.loss_history[-1]:.4f}", refresh=False)
                if self.verbose and (t - 1) % self.print_every == 0:
                    self._print(
                        f"(Iteration {t} / {num_iterations}) loss: {self.loss_history[-1]:f}", bar
                    )
                if t % self.iterations_per_epoch == 0:
                    self.epoch += 1
                    if self.lr_schedule is None:
                        for config in self.optim_configs.values():
                            if "learning_rate" in config:
                                config["learning_rate"] *= self.lr_decay
                    self._end_of_check(bar)
                    if self.on_epoch_end is not None:
                        self.on_epoch_end(self)
                if interrupted.is_set():
                    raise KeyboardInterrupt
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            if bar is not None:
                bar.close()
        self._load_model_state(self._best_state)
