"""Solver callbacks: what happens around the training loop, one class each.

A callback is any object with some of these methods, each called with the Solver:

- ``on_train_begin(solver)``: when train() starts (after the epoch-0 accuracy check of a
  fresh run);
- ``on_step_end(solver)``: after every parameter update;
- ``on_epoch_end(solver)``: after each epoch's accuracy check;
- ``on_train_end(solver)``: when train() returns or raises (e.g. on Ctrl-C), so resources
  are always released.

Pass them as ``Solver(..., callbacks=[...])``; they run in list order. :class:`Callback` is an
optional base class with every method a no-op.
"""

import csv
import os
import time

import numpy as np

from convlab.backend import asnumpy


class Callback:
    """No-op base: override the hooks you need."""

    def on_train_begin(self, solver):
        """When train() starts (after the epoch-0 accuracy check of a fresh run)."""

    def on_step_end(self, solver):
        """After every parameter update (``solver.iteration`` already counts it)."""

    def on_epoch_end(self, solver):
        """After each epoch's accuracy check (``solver.epoch`` already counts it)."""

    def on_train_end(self, solver):
        """When train() returns or raises, so resources are always released."""


class LambdaCallback(Callback):
    """Calls ``fn(solver)`` after every epoch (the Solver's ``on_epoch_end`` keyword)."""

    def __init__(self, on_epoch_end):
        self.on_epoch_end = on_epoch_end


class ProgressBar(Callback):
    """A tqdm bar per epoch with the last loss; its rate and ETA come from training steps
    only (the bar closes before the epoch's evaluation). tqdm.auto gives a widget in Jupyter;
    when the output is not a terminal the bar is left out (disable=None), so logs stay clean.
    The Solver's printed lines go above it (tqdm.write)."""

    def __init__(self):
        self.bar = None

    def on_step_end(self, solver):
        if self.bar is None:
            # Imported here: tqdm.auto warns inside Jupyter without ipywidgets even when unused.
            from tqdm.auto import tqdm

            per_epoch = solver.iterations_per_epoch
            self.bar = tqdm(total=per_epoch, initial=(solver.iteration - 1) % per_epoch,
                            desc=f"Epoch {solver.epoch + 1}/{solver.num_epochs}", unit="it",
                            leave=False, disable=None)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{solver.loss_history[-1]:.4f}", refresh=False)
        if solver.iteration % solver.iterations_per_epoch == 0:
            self.on_train_end(solver)

    def on_train_end(self, solver):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Checkpoint(Callback):
    """``solver.save(path)`` after every epoch; ``path`` may contain ``{epoch}``.

    ``at_start=True`` also saves before the first update of a fresh run (cs231n's
    ``checkpoint_name`` saves at epoch 0 too).
    """

    def __init__(self, path, at_start=False, verbose=False):
        self.path = os.fspath(path)
        self.at_start = at_start
        self.verbose = verbose

    def _save(self, solver):
        path = self.path.format(epoch=solver.epoch)
        if self.verbose:
            solver.print(f'Saving checkpoint to "{path}"')
        solver.save(path)

    def on_train_begin(self, solver):
        if self.at_start and solver.iteration == 0:
            self._save(solver)

    def on_epoch_end(self, solver):
        self._save(solver)


class MetricsCSV(Callback):
    """Appends one row per epoch to a CSV file: epoch, mean train loss over the epoch, train
    accuracy, val loss and accuracy, learning rate, the epoch's wall time and the run's so
    far (``elapsed_offset`` is the time of earlier sessions of a resumed run)."""

    FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "learning_rate",
              "epoch_s", "elapsed_s"]

    def __init__(self, path, elapsed_offset=0.0):
        self.path = os.fspath(path)
        self.elapsed_offset = elapsed_offset
        self._start = None

    def elapsed(self):
        """Wall time of the run so far, earlier sessions included."""
        return self.elapsed_offset + time.perf_counter() - self._start

    def on_train_begin(self, solver):
        self._start = time.perf_counter()

    def on_epoch_end(self, solver):
        losses = solver.loss_history[-solver.iterations_per_epoch:]
        row = {
            "epoch": solver.epoch,
            "train_loss": f"{np.mean(losses):.6f}",
            "train_acc": f"{solver.train_acc_history[-1]:.6f}",
            "val_loss": f"{solver.val_loss_history[-1]:.6f}",
            "val_acc": f"{solver.val_acc_history[-1]:.6f}",
            "learning_rate": f"{solver.lr_history[-1]:.6g}",
            "epoch_s": f"{solver.epoch_time_history[-1]:.1f}",
            "elapsed_s": f"{self.elapsed():.1f}",
        }
        new_file = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.FIELDS)
            if new_file:
                writer.writeheader()
            writer.writerow(row)


class Curves(Callback):
    """Saves the loss and accuracy curves (vis_utils.plot_solver_history) as a PNG after
    every epoch."""

    def __init__(self, path, dpi=100):
        self.path = os.fspath(path)
        self.dpi = dpi

    def on_epoch_end(self, solver):
        # Imported lazily: matplotlib is slow to import and only needed here.
        from convlab.vis_utils import plot_solver_history

        # A bare Figure (not pyplot's): nothing to close, freed with its last reference.
        plot_solver_history(solver).savefig(self.path, dpi=self.dpi)


class EarlyStopping(Callback):
    """Stops training when validation accuracy has not improved for ``patience`` epochs
    (the Solver keeps the best parameters either way)."""

    def __init__(self, patience=5, min_delta=0.0):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = patience
        self.min_delta = min_delta

    def on_epoch_end(self, solver):
        history = solver.val_acc_history
        best_before = max(history[:-self.patience], default=None)
        recent = max(history[-self.patience:])
        if best_before is not None and recent <= best_before + self.min_delta:
            solver.print(f"Early stopping: no val_acc gain for {self.patience} epochs")
            solver.stop_training = True


class StepTimer(Callback):
    """Wall time of every step (forward, backward and update), in seconds, in ``times``."""

    def __init__(self):
        self.times = []
        self._last = None

    def on_train_begin(self, solver):
        self._last = time.perf_counter()

    def on_step_end(self, solver):
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now

    def on_epoch_end(self, solver):
        self._last = time.perf_counter()  # the accuracy check is not a step


class TensorBoard(Callback):
    """TensorBoard logs through tensorboardX (``pip install "convlab[tensorboard]"``; no
    TensorFlow or PyTorch needed): the training loss every step; per epoch the train and
    val accuracy, val loss and learning rate, and a histogram of every parameter and of its
    last gradient. View them with ``tensorboard --logdir LOGDIR``."""

    def __init__(self, logdir, histograms=True):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise ImportError(
                'TensorBoard logging needs tensorboardX: pip install "convlab[tensorboard]"'
            ) from None
        self.writer = SummaryWriter(logdir=os.fspath(logdir))
        self.histograms = histograms

    def on_step_end(self, solver):
        self.writer.add_scalar("train/loss", solver.loss_history[-1], solver.iteration)

    def on_epoch_end(self, solver):
        epoch = solver.epoch
        scalars = {"train/acc": solver.train_acc_history[-1], "val/acc": solver.val_acc_history[-1],
                   "val/loss": solver.val_loss_history[-1], "learning_rate": solver.lr_history[-1]}
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, epoch)
        if self.histograms:
            for name, value in solver.model.params.items():
                self.writer.add_histogram(f"weights/{name}", asnumpy(value), epoch)
                grad = solver.last_grads.get(name)
                if grad is not None:
                    self.writer.add_histogram(f"gradients/{name}", asnumpy(grad), epoch)
        self.writer.flush()

    def on_train_end(self, solver):
        self.writer.flush()


class LiveCurves(Callback):
    """Training curves redrawn in place after every epoch: one figure in a Jupyter notebook
    (an IPython display handle it updates), and/or a PNG rewritten at ``path``."""

    def __init__(self, path=None, dpi=80):
        self.path = None if path is None else os.fspath(path)
        self.dpi = dpi
        self.handle = None

    def on_epoch_end(self, solver):
        from convlab.vis_utils import plot_solver_history

        fig = plot_solver_history(solver, title=f"epoch {solver.epoch} / {solver.num_epochs}")
        if self.path is not None:
            fig.savefig(self.path, dpi=self.dpi)
        if _in_notebook():
            from IPython.display import display

            if self.handle is None:
                self.handle = display(fig, display_id=True)
            else:
                self.handle.update(fig)


def _in_notebook():
    """True inside a Jupyter kernel (where a display handle can be updated)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
