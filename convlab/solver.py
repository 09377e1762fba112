"""Solver: trains a classifier with minibatch gradient descent (the cs231n training loop).

What happens around the loop (progress bar, checkpoints, metrics files, curves, early
stopping) lives in :mod:`convlab.callbacks`; learning-rate schedules in
:mod:`convlab.schedules`.
"""

import time

import numpy as np

from convlab import optim
from convlab._checks import check_labels
from convlab._course_random import CourseRandom
from convlab.backend import asnumpy, is_host, to_device
from convlab.callbacks import Checkpoint, LambdaCallback, ProgressBar
from convlab.interrupts import GracefulInterrupt, StopNow
from convlab.layers import softmax_loss
from convlab.schedules import SCHEDULES, make_schedule
from convlab.serialization import atomic_savez, load_npz

__all__ = ["SCHEDULES", "Solver", "StopNow"]

_DEFAULTS = dict(
    update_rule="sgd", optim_config=None, lr_decay=1.0, batch_size=100, num_epochs=10,
    num_train_samples=1000, num_val_samples=None, checkpoint_name=None, print_every=10,
    verbose=True, seed=None, shuffle=False, lr_schedule=None, lr_step_epochs=None,
    lr_step_gamma=0.1, lr_warmup_frac=0.3, weight_decay=0.0, augment=None, progress=None,
    on_epoch_end=None, callbacks=(), device=None,
)


class Solver:
    """Trains ``model`` on ``data`` with minibatch gradient descent.

    The cs231n contract::

        solver = Solver(model, data, update_rule='sgd', optim_config={'learning_rate': 1e-3},
                        lr_decay=0.95, num_epochs=10, batch_size=100, print_every=100)
        solver.train()

    ``data`` holds ``X_train, y_train, X_val, y_val``; ``model`` has ``params`` and
    ``loss(X, y=None)``. After ``train()`` the model holds the parameters with the best
    validation accuracy.

    cs231n keywords (defaults in brackets):

    - ``update_rule`` ['sgd']: a name in convlab.optim or a callable ``(w, dw, config)``.
    - ``optim_config`` [{}]: the update rule's hyperparameters, e.g. ``learning_rate``.
    - ``lr_decay`` [1.0]: the learning rate is multiplied by it after every epoch.
    - ``batch_size`` [100], ``num_epochs`` [10].
    - ``num_train_samples`` [1000]: training examples sampled for the train accuracy.
    - ``num_val_samples`` [None]: validation examples sampled (None: all).
    - ``checkpoint_name`` [None]: save the state to ``<name>_epoch_<e>.npz`` every epoch.
    - ``print_every`` [10]: iterations between loss lines (None: no iteration lines, one
      line per epoch); ``verbose`` [True]: print.

    convlab keywords:

    - ``seed`` [None]: seeds the solver's own np.random.Generator (minibatches, accuracy
      subsamples, augmentation, dropout masks), independent of NumPy's global random state.
      None draws them from the global state, exactly as cs231n does (``np.random.choice``
      for minibatches and subsamples), so ``np.random.seed(...)`` before training gives the
      course's published runs.
    - ``shuffle`` [False]: each epoch visits every training example once in a fresh random
      order, instead of cs231n's independent random minibatches.
    - ``lr_schedule`` [None]: 'step', 'cosine', 'onecycle' (see convlab.schedules, options
      ``lr_step_epochs``, ``lr_step_gamma`` [0.1], ``lr_warmup_frac`` [0.3]) or a callable
      ``f(iteration, num_iterations) -> multiplier``. Mutually exclusive with ``lr_decay``.
    - ``weight_decay`` [0.0]: adds ``weight_decay * w`` to the gradient of every parameter
      with two or more dimensions (weights, not biases or batchnorm scales).
    - ``augment`` [None]: a callable ``f(X_batch, rng) -> X_batch`` for training batches.
    - ``progress`` [verbose]: a tqdm bar per epoch (ETA from training steps only) and one
      while evaluating; tqdm leaves them out when the output is not a terminal.
    - ``callbacks`` [()]: objects with on_train_begin / on_step_end / on_epoch_end /
      on_train_end methods (see convlab.callbacks); ``on_epoch_end`` [None] is shorthand
      for one callable ``f(solver)`` run after every epoch.
    - ``device`` [None]: 'cpu', 'cuda' or 'cuda:K': the model is moved there
      (``model.to(device)``) and trains there, each minibatch copied over once per step
      (augmentation runs on the host before); None trains the model where it is. Metrics,
      the best parameters and checkpoints live on the host, in the same format whatever
      the device.

    While it trains, the Solver lends its generator to the model's dropout layers
    (``model.use_dropout_rng``), so masks are fresh every step and reproducible from
    ``seed`` (or the global state), even for a model whose own seed fixes its masks for
    gradient checks.

    As in cs231n, the first accuracy check (epoch 0) comes after the first update; with one
    iteration per epoch that update ends epoch 1 and there is no epoch-0 check.

    ``state_dict()`` / ``load_state_dict()`` (and ``save(path)`` / ``load(path)``, an
    atomic ``.npz``) hold the whole training state: parameters, optimizer state, batchnorm
    statistics, histories, random state and position in the run, so a loaded solver
    continues exactly where the saved one stopped.

    Each epoch line keeps cs231n's form and adds the epoch's mean training loss, the
    validation loss (softmax cross-entropy of the scores), the learning rate and the wall
    time of the epoch's steps; ``val_loss_history`` and ``epoch_time_history`` keep them.

    A non-finite loss stops training with FloatingPointError naming the iteration. Ctrl-C
    during ``train()`` is acknowledged at once and takes effect at the end of the current
    step or evaluation batch (well under a second): KeyboardInterrupt is raised with the
    state consistent, so it can be saved. A second Ctrl-C raises StopNow immediately. A
    callback may set ``solver.stop_training = True``.
    """

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
        # Labels outside the model's classes would silently count as mistakes.
        num_classes = getattr(model, "num_classes", None)
        self.y_train = check_labels(self.y_train, len(self.X_train), num_classes, "y_train")
        self.y_val = check_labels(self.y_val, len(self.X_val), num_classes, "y_val")
        unknown = set(kwargs) - set(_DEFAULTS)
        if unknown:
            raise ValueError(f"Unrecognized arguments {', '.join(sorted(unknown))}")
        for key, default in _DEFAULTS.items():
            setattr(self, key, kwargs.get(key, default))
        self.optim_config = dict(self.optim_config or {})

        if self.device is not None:
            if not callable(getattr(model, "to", None)):
                raise ValueError("device= needs a model with a to(device) method, as every "
                                 "convlab classifier has")
            model.to(self.device)
        self.update_rule = optim.get_update_rule(self.update_rule)
        if int(self.batch_size) < 1 or int(self.num_epochs) < 0:
            raise ValueError("batch_size must be >= 1 and num_epochs >= 0")
        self._schedule = self._make_schedule()
        if self.augment is not None and not callable(self.augment):
            raise ValueError("augment must be a callable f(X_batch, rng) -> X_batch")
        if self.progress is None:
            self.progress = self.verbose

        self.callbacks = list(self.callbacks)
        if self.progress:
            self.callbacks.insert(0, ProgressBar())
        if self.checkpoint_name is not None:
            self.callbacks.append(Checkpoint(f"{self.checkpoint_name}_epoch_{{epoch}}.npz",
                                             at_start=True, verbose=self.verbose))
        if self.on_epoch_end is not None:
            self.callbacks.append(LambdaCallback(self.on_epoch_end))
        self.stop_training = False
        self._interrupt = GracefulInterrupt(say=self.print)  # SIGINT's handler in train()
        self.last_grads = {}
        self._reset()

    def _make_schedule(self):
        if self.lr_schedule is None:
            return None
        if isinstance(self.lr_schedule, str):
            if self.lr_schedule not in SCHEDULES:
                raise ValueError(
                    f"lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}"
                )
            schedule = make_schedule(self.lr_schedule, self.num_epochs,
                                     self.iterations_per_epoch, self.lr_step_epochs,
                                     self.lr_step_gamma, self.lr_warmup_frac)
        elif callable(self.lr_schedule):
            schedule = self.lr_schedule
        else:
            raise ValueError("lr_schedule must be None, a name or a callable")
        if self.lr_decay != 1.0:
            raise ValueError("use either lr_decay or lr_schedule, not both")
        if "learning_rate" not in self.optim_config:
            raise ValueError("lr_schedule needs optim_config['learning_rate'] as its base rate")
        return schedule

    # ------------------------------------------------------------------ state

    def _reset(self):
        """Book-keeping for a fresh run; train() starts from here, load() overwrites it."""
        self.epoch = 0
        self.iteration = 0
        # True between the last step of an epoch and the end of its accuracy check, so an
        # interrupted check is done again when training continues.
        self._check_pending = False
        self.best_val_acc = 0
        self.best_params = {}
        self._best_state = {}
        self.loss_history = []
        self.train_acc_history = []
        self.val_acc_history = []
        self.val_loss_history = []
        self.epoch_time_history = []
        self.lr_history = []
        self.random = CourseRandom(self.seed)
        self._epoch_order = None
        self.optim_configs = {name: dict(self.optim_config) for name in self.model.params}
        self._base_lr = {
            name: config.get("learning_rate") for name, config in self.optim_configs.items()
        }

    @property
    def rng(self):
        """The np.random.Generator lent to augmentation and dropout (see CourseRandom)."""
        return self.random.generator

    @property
    def iterations_per_epoch(self):
        """Steps per epoch: training examples // batch size (at least 1)."""
        return max(len(self.X_train) // self.batch_size, 1)

    @property
    def num_iterations(self):
        """Steps in the whole run: num_epochs * iterations_per_epoch."""
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

    def state_dict(self):
        """The complete training state as ``(arrays, meta)``: a dict of arrays and a
        JSON-serialisable dict of everything else."""
        arrays = {f"model.{k}": v for k, v in asnumpy(self._model_state()).items()}
        arrays.update({f"best.{k}": v for k, v in self._best_state.items()})
        optim_scalars = {}
        for name, config in self.optim_configs.items():
            optim_scalars[name] = {}
            for key, value in asnumpy(config).items():
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
            "iteration": self.iteration,
            "check_pending": self._check_pending,
            "batch_size": self.batch_size,
            "num_train": len(self.X_train),
            "best_val_acc": self.best_val_acc,
            "loss_history": self.loss_history,
            "train_acc_history": self.train_acc_history,
            "val_acc_history": self.val_acc_history,
            "val_loss_history": self.val_loss_history,
            "epoch_time_history": self.epoch_time_history,
            "lr_history": self.lr_history,
            "optim_scalars": optim_scalars,
            "base_lr": self._base_lr,
            "rng_state": self.random.state(),
        }
        return arrays, meta

    def load_state_dict(self, arrays, meta, source="state"):
        """Restore a state from state_dict() into this solver and its model."""
        if meta.get("format") != "convlab-solver":
            raise ValueError(f"{source} is not a convlab solver checkpoint")
        if meta["batch_size"] != self.batch_size or meta["num_train"] != len(self.X_train):
            raise ValueError(
                f"{source} was saved with batch_size {meta['batch_size']} and "
                f"{meta['num_train']} training examples; this solver has {self.batch_size} "
                f"and {len(self.X_train)}"
            )

        def with_prefix(prefix):
            return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}

        self._load_model_state(with_prefix("model."))
        self._best_state = with_prefix("best.")
        self.best_params = {k: v for k, v in self._best_state.items() if k in self.model.params}
        self.optim_configs = {}
        device = getattr(self.model, "device", "cpu")  # optimizer state lives with the model
        for name, scalars in meta["optim_scalars"].items():
            config = dict(scalars)
            config.update(to_device(with_prefix(f"optim.{name}."), device))
            self.optim_configs[name] = config
        self._epoch_order = arrays.get("epoch_order")
        self.epoch = meta["epoch"]
        self.iteration = meta["iteration"]
        self._check_pending = meta.get("check_pending", False)
        self.best_val_acc = meta["best_val_acc"]
        self.loss_history = meta["loss_history"]
        self.train_acc_history = meta["train_acc_history"]
        self.val_acc_history = meta["val_acc_history"]
        # Checkpoints written before these histories existed resume with them empty.
        self.val_loss_history = meta.get("val_loss_history", [])
        self.epoch_time_history = meta.get("epoch_time_history", [])
        self.lr_history = meta["lr_history"]
        self._base_lr = meta["base_lr"]
        self.random = CourseRandom.from_state(meta["rng_state"])

    def save(self, path):
        """Write the complete training state to ``path`` (.npz), atomically."""
        atomic_savez(path, *self.state_dict())

    def load(self, path):
        """Restore the state written by save() into this solver and its model."""
        self.load_state_dict(*load_npz(path), source=path)

    # ------------------------------------------------------------------ training

    def _next_batch_indices(self):
        N, B = len(self.X_train), self.batch_size
        if not self.shuffle:
            return self.random.choice(N, B)
        position = self.iteration % self.iterations_per_epoch
        if position == 0 or self._epoch_order is None:
            self._epoch_order = self.random.permutation(N)
        return self._epoch_order[position * B : (position + 1) * B]

    def _step(self):
        """One gradient update on a minibatch."""
        batch = self._next_batch_indices()
        X_batch, y_batch = self.X_train[batch], self.y_train[batch]
        if self.augment is not None:
            X_batch = self.augment(X_batch, self.rng)

        loss, grads = self.model.loss(X_batch, y_batch)
        self.last_grads = grads  # for callbacks (e.g. gradient histograms)
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"loss is {loss} at iteration {self.iteration + 1}: training diverged "
                "(try a smaller learning rate or weight scale)"
            )
        if self._schedule is not None:
            multiplier = self._schedule(self.iteration, max(self.num_iterations, 1))
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
        return self._evaluate(X, y, num_samples, batch_size)[0]

    def _evaluate(self, X, y, num_samples=None, batch_size=100, desc=None):
        """(accuracy, mean softmax cross-entropy) of the model on (a random subsample of
        num_samples of) X, in test mode, batch by batch; a Ctrl-C stops it between batches."""
        N = len(X)
        if num_samples is not None and N > num_samples:
            mask = self.random.choice(N, num_samples)
            X, y = X[mask], y[mask]
            N = num_samples
        if N == 0:
            return 0.0, float("nan")
        correct, total_loss = 0, 0.0
        starts = range(0, N, batch_size)
        if self.progress and desc is not None:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=desc, unit="batch", leave=False, disable=None)
        for i in starts:
            scores = asnumpy(self.model.loss(X[i : i + batch_size]))
            y_batch = y[i : i + batch_size]
            correct += int(np.sum(np.argmax(scores, axis=1) == y_batch))
            total_loss += softmax_loss(scores, y_batch)[0] * len(y_batch)
            self._interrupt.check()
        return correct / N, float(total_loss / N)

    def print(self, line):
        """Print a line above any progress bar."""
        from tqdm import tqdm

        tqdm.write(line)

    def _end_of_check(self):
        train_acc = self.check_accuracy(self.X_train, self.y_train, self.num_train_samples)
        val_acc, val_loss = self._evaluate(self.X_val, self.y_val, self.num_val_samples,
                                           desc="evaluating")
        self.train_acc_history.append(train_acc)
        self.val_acc_history.append(val_acc)
        self.val_loss_history.append(val_loss)
        if self.verbose:
            line = (f"(Epoch {self.epoch} / {self.num_epochs}) train acc: {train_acc:f}; "
                    f"val_acc: {val_acc:f}")
            if self.epoch > 0:
                train_loss = np.mean(self.loss_history[-self.iterations_per_epoch:])
                line += (f" - train_loss {train_loss:.4f} - val_loss {val_loss:.4f}"
                         f" - lr {self.lr_history[-1]:.3g} - {self.epoch_time_history[-1]:.1f}s")
            else:
                line += f" - val_loss {val_loss:.4f}"
            self.print(line)
        if val_acc > self.best_val_acc or not self._best_state:
            self.best_val_acc = max(val_acc, self.best_val_acc)
            # Host copies: a model on a GPU keeps only its current parameters there.
            self._best_state = {k: v.copy() if is_host(v) else asnumpy(v)
                                for k, v in self._model_state().items()}
            self.best_params = {k: v for k, v in self._best_state.items() if k in self.model.params}

    def _run_check(self):
        """The accuracy check due at this iteration: at every epoch's end, then the epoch's
        callbacks; after the first update (epoch 0), without them."""
        self._end_of_check()
        self._check_pending = False
        if self.iteration % self.iterations_per_epoch == 0:
            self._callbacks("on_epoch_end")

    def _callbacks(self, hook):
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(self)

    def train(self):
        """Run (or continue) optimisation, then load the best parameters into the model."""
        lend_rng = getattr(self.model, "use_dropout_rng", None)
        if lend_rng is not None:
            lend_rng(self.rng)
        self.stop_training = False
        self._schedule = self._make_schedule()  # lr_schedule may have been set since __init__
        try:
            with self._interrupt:
                self._run_iterations()
        finally:
            if lend_rng is not None:
                lend_rng(None)
            self._callbacks("on_train_end")
        if self._best_state:  # empty when no update ran (num_epochs=0)
            self._load_model_state(self._best_state)

    def _run_iterations(self):
        num_iterations = self.num_iterations
        self._callbacks("on_train_begin")
        if self._check_pending:  # a check interrupted before the state was saved
            self._run_check()
        self._epoch_start = time.perf_counter()
        while self.iteration < num_iterations and not self.stop_training:
            self._step()
            self.iteration += 1
            t = self.iteration
            self._callbacks("on_step_end")
            if self.verbose and self.print_every and (t - 1) % self.print_every == 0:
                loss = self.loss_history[-1]
                self.print(f"(Iteration {t} / {num_iterations}) loss: {loss:f}")
            if t % self.iterations_per_epoch == 0:
                self.epoch += 1
                self.epoch_time_history.append(time.perf_counter() - self._epoch_start)
                if self._schedule is None:
                    for config in self.optim_configs.values():
                        if "learning_rate" in config:
                            config["learning_rate"] *= self.lr_decay
                self._check_pending = True
                self._run_check()
                self._epoch_start = time.perf_counter()
            elif t == 1:
                # cs231n checks "epoch 0" after the first update, not before it; the check's
                # time is not the epoch's.
                check_start = time.perf_counter()
                self._check_pending = True
                self._run_check()
                self._epoch_start += time.perf_counter() - check_start
            self._interrupt.check()
