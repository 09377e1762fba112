"""What every convlab classifier shares beyond the ``params`` / ``loss(X, y=None)`` contract:
the arguments it was built with (so a saved model can be rebuilt without pickling code) and
its state (parameters plus batchnorm running statistics) as a flat dict of arrays.
"""

import numpy as np

from convlab._checks import check_labels
from convlab.backend import check_device, device_of, is_host, to_device

# He initialisation of the scores layer, scaled down: the initial scores are then close to 0,
# so the loss starts at ln(num_classes) with no early spike.
SCORES_GAIN = 0.01


def init_std(weight_scale, fan_in, scores=False):
    """Standard deviation of initial weights: weight_scale, or if None He's sqrt(2 / fan_in),
    which keeps activation variance constant through ReLU layers, times SCORES_GAIN for the
    layer that computes the class scores (``scores=True``)."""
    if weight_scale is not None:
        return weight_scale
    return np.sqrt(2.0 / fan_in) * (SCORES_GAIN if scores else 1.0)


class Classifier:
    """Base class. Subclasses set ``self.init_args`` (JSON-serialisable constructor
    arguments), ``self.params``, and, when they have such layers, ``self.bn_params`` (a list
    of dicts holding 'mode', 'running_mean', 'running_var') and ``self.dropout_params`` (a
    list of dropout_param dicts).

    Two sources of randomness are kept apart: a model's ``seed`` draws its initial weights
    and, as in cs231n, fixes every dropout mask (``dropout_param['seed']``), which makes the
    loss deterministic for gradient checks; :meth:`use_dropout_rng` instead draws fresh masks
    from a generator the caller owns (the Solver does this while it trains).
    """

    bn_params = ()
    dropout_params = ()
    # Whether every layer of the model runs on a GPU (the layers are written against xp);
    # a subclass whose layers are NumPy-only sets it False and stays on the CPU.
    runs_on_gpu = True

    @property
    def device(self):
        """Where the parameters live: 'cpu' or 'cuda:K' (see :meth:`to`)."""
        return device_of(next(iter(self.params.values()), None))

    def to(self, device):
        """Move the parameters and batchnorm running statistics to ``device`` ('cpu',
        'cuda' or 'cuda:K') and return the model: ``model = ConvNet("reference").to("cuda")``.
        Batches given to ``loss`` are then copied there too, and its outputs stay there
        (convlab.backend.asnumpy brings them back). Saved files are the same whatever the
        device, so a model trained on a GPU loads on a CPU."""
        device = check_device(device)
        if device != "cpu" and not self.runs_on_gpu:
            raise ValueError(f"{type(self).__name__} runs on the CPU only, not on {device}")
        self.params = to_device(self.params, device)
        for bn_param in self.bn_params:
            for key in ("running_mean", "running_var"):
                if bn_param.get(key) is not None:
                    bn_param[key] = to_device(bn_param[key], device)
        return self

    def save(self, fname):
        """Write this model to ``fname`` (.npz: constructor arguments, parameters, batchnorm
        statistics; never a pickle). Same as convlab.save_model(self, fname)."""
        from convlab.serialization import save_model

        save_model(self, fname)

    def load(self, fname):
        """Load parameters and batchnorm statistics saved by :meth:`save` into this model
        (cs231n 2025's ``model.load``); the file must hold a model of this class with the
        same constructor arguments. Returns self."""
        from convlab.serialization import load_model

        other = load_model(fname)
        if type(other) is not type(self) or other.init_args != self.init_args:
            raise ValueError(
                f"{fname} holds a {type(other).__name__} built with {other.init_args}, not "
                f"this {type(self).__name__} ({self.init_args}); use convlab.load_model to "
                "rebuild it as saved"
            )
        self.load_state_dict(other.state_dict())
        return self

    @classmethod
    def from_file(cls, fname):
        """A new model rebuilt from ``fname`` as it was saved (convlab.load_model), checked
        to be of this class: e.g. ``ConvNet.from_file("model.npz")``."""
        from convlab.serialization import load_model

        model = load_model(fname)
        if not isinstance(model, cls):
            raise ValueError(f"{fname} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def _set_mode(self, y):
        """Batchnorm and dropout run in 'train' mode when labels are given, else 'test'."""
        mode = "test" if y is None else "train"
        for param in (*self.bn_params, *self.dropout_params):
            param["mode"] = mode

    def use_dropout_rng(self, rng):
        """Draw every dropout mask from the np.random.Generator ``rng`` (fresh masks each
        step, reproducible from rng's seed) instead of the fixed seeds; None undoes it."""
        for param in self.dropout_params:
            if rng is None:
                param.pop("rng", None)
            else:
                param["rng"] = rng

    def state_dict(self):
        """Parameters and batchnorm running statistics, keyed by name."""
        state = {name: value for name, value in self.params.items()}
        for i, bn_param in enumerate(self.bn_params):
            for key in ("running_mean", "running_var"):
                if bn_param.get(key) is not None:
                    state[f"bn_params.{i}.{key}"] = bn_param[key]
        return state

    def load_state_dict(self, state):
        """Copy arrays from ``state`` (as returned by state_dict) into this model.

        Every parameter must be present with its current shape; the dtype is the model's.
        """
        for name, value in self.params.items():
            if name not in state:
                raise ValueError(f"state has no entry for parameter {name!r}")
            if state[name].shape != value.shape:
                raise ValueError(
                    f"parameter {name!r} has shape {value.shape}, state has {state[name].shape}"
                )
            # The copy lands where the parameter lives, whatever device state came from.
            self.params[name] = to_device(state[name], self.device).astype(value.dtype)
        for i, bn_param in enumerate(self.bn_params):
            for key in ("running_mean", "running_var"):
                name = f"bn_params.{i}.{key}"
                if name in state:
                    bn_param[key] = to_device(state[name], self.device).astype(self.dtype)

    def _check_batch(self, X, y):
        """X cast to the model's dtype and y validated, both copied to the model's device
        when they are elsewhere; X must match the input shape. Returns (X, y)."""
        X = np.asarray(X) if is_host(X) else X
        features = X.shape[1:]
        # Fully connected models take any (N, d1, ..., dk) whose features flatten to D.
        flat_ok = len(self.input_shape) == 1 and int(np.prod(features)) == self.input_shape[0]
        if X.ndim < 2 or not (features == tuple(self.input_shape) or flat_ok):
            raise ValueError(
                f"X must have shape (N, {', '.join(map(str, self.input_shape))}), got {X.shape}"
            )
        device = self.device
        if y is not None:
            y = to_device(check_labels(y, X.shape[0], self.num_classes), device)
        return to_device(X, device).astype(self.dtype, copy=False), y

    def _l2(self, weight_names, grads):
        """Adds 0.5 * reg * sum(W**2) to the loss and reg * W to each weight's gradient."""
        penalty = 0.0
        if self.reg == 0:
            # Four passes over every weight matrix for nothing (about 3% of a
            # ThreeLayerConvNet step); a NaN weight reaches the loss through the scores.
            return penalty
        for name in weight_names:
            W = self.params[name]
            penalty += 0.5 * self.reg * float((W * W).sum())
            grads[name] += self.reg * W
        return penalty
