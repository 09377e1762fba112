"""First-order update rules.

Each rule is ``rule(w, dw, config=None) -> (next_w, config)``: missing config keys are filled
with their defaults, and the returned config carries the rule's state (velocity, moments,
step count) into the next call. State arrays take w's dtype and device, so float32 stays
float32 and a GPU parameter keeps its state on the GPU. No rule writes to the arrays it is
given: next_w and the new state are new arrays.

The NumPy expressions below are each rule's definition. On the CPU the rules other than
sgd run them as one compiled pass (convlab._kernels), in the same order of operations,
over w, dw and the state at once, where NumPy makes a pass and a temporary per operation;
other devices, dtypes and layouts take the expressions themselves.
"""

import numpy as np

from convlab._threads import load_kernels
from convlab.backend import get_array_module

_kernels = load_kernels()

# Parameters smaller than this run their compiled update on one thread: waking the other
# (passively waiting) threads costs 20-30 us, more than two threads save below about this
# size (2 cores: Adam 257 -> 187 us and momentum even at 2^18 float32 values; at 2^15 both
# slower on two threads).
_PARALLEL_MIN_SIZE = 1 << 18


def _prepare(w, dw, config, **defaults):
    if dw.shape != w.shape:
        raise ValueError(f"gradient shape {dw.shape} does not match weight shape {w.shape}")
    config = {} if config is None else config
    for key, value in defaults.items():
        config.setdefault(key, value)
    return config


def _state(config, key, w):
    if config.get(key) is None:
        config[key] = get_array_module(w).zeros_like(w)
    return config[key]


def _compiled(w, dw, *state):
    """(flat views of w, dw and the state, flat out arrays for next_w and the new state,
    the kernel's thread count) when the compiled pass applies: host arrays of one float
    dtype, each one C-contiguous run; else None."""
    arrays = (w, dw, *state)
    if not (isinstance(w, np.ndarray) and w.dtype in (np.float32, np.float64)
            and all(isinstance(a, np.ndarray) and a.dtype == w.dtype and a.shape == w.shape
                    and a.flags.c_contiguous for a in arrays)):
        return None
    outs = [np.empty_like(w) for _ in range(1 + len(state))]
    threads = 1 if w.size < _PARALLEL_MIN_SIZE else 0
    return [a.reshape(-1) for a in arrays], outs, threads


def sgd(w, dw, config=None):
    """Vanilla SGD: w -= learning_rate * dw. Config: learning_rate (1e-2)."""
    config = _prepare(w, dw, config, learning_rate=1e-2)
    return w - config["learning_rate"] * dw, config


def sgd_momentum(w, dw, config=None):
    """SGD with momentum: v = momentum * v - learning_rate * dw; w += v.

    Config: learning_rate (1e-2), momentum (0.9), velocity (zeros like w).
    """
    config = _prepare(w, dw, config, learning_rate=1e-2, momentum=0.9)
    velocity = _state(config, "velocity", w)
    compiled = _compiled(w, dw, velocity)
    if compiled is not None:
        flat, (next_w, config["velocity"]), threads = compiled
        _kernels.momentum_update(*flat, next_w.reshape(-1), config["velocity"].reshape(-1),
                                 config["learning_rate"], config["momentum"], threads=threads)
        return next_w, config
    v = config["momentum"] * velocity - config["learning_rate"] * dw
    config["velocity"] = v
    return w + v, config


def nesterov_momentum(w, dw, config=None):
    """Nesterov momentum, in the form that keeps w at the looked-ahead point:

    v_new = momentum * v - learning_rate * dw;  w += -momentum * v + (1 + momentum) * v_new.
    Config: learning_rate (1e-2), momentum (0.9), velocity (zeros like w).
    """
    config = _prepare(w, dw, config, learning_rate=1e-2, momentum=0.9)
    mu = config["momentum"]
    v = _state(config, "velocity", w)
    compiled = _compiled(w, dw, v)
    if compiled is not None:
        flat, (next_w, config["velocity"]), threads = compiled
        _kernels.momentum_update(*flat, next_w.reshape(-1), config["velocity"].reshape(-1),
                                 config["learning_rate"], mu, nesterov=True, threads=threads)
        return next_w, config
    v_new = mu * v - config["learning_rate"] * dw
    config["velocity"] = v_new
    return w - mu * v + (1 + mu) * v_new, config


def _scaled_step(w, dw, config, decay_rate):
    """AdaGrad's (decay_rate 1) and RMSProp's compiled pass: next_w, the new cache in
    config; None where the pass does not apply."""
    compiled = _compiled(w, dw, _state(config, "cache", w))
    if compiled is None:
        return None
    flat, (next_w, config["cache"]), threads = compiled
    _kernels.scaled_update(*flat, next_w.reshape(-1), config["cache"].reshape(-1),
                           config["learning_rate"], decay_rate, config["epsilon"],
                           threads=threads)
    return next_w


def adagrad(w, dw, config=None):
    """AdaGrad: per-parameter step shrinks with the sum of all squared gradients seen.

    cache += dw**2;  w -= learning_rate * dw / (sqrt(cache) + epsilon).
    Config: learning_rate (1e-2), epsilon (1e-8), cache (zeros like w).
    """
    config = _prepare(w, dw, config, learning_rate=1e-2, epsilon=1e-8)
    next_w = _scaled_step(w, dw, config, 1.0)
    if next_w is not None:
        return next_w, config
    cache = config["cache"] + dw**2
    config["cache"] = cache
    sqrt = get_array_module(w).sqrt
    return w - config["learning_rate"] * dw / (sqrt(cache) + config["epsilon"]), config


def rmsprop(w, dw, config=None):
    """RMSProp: like AdaGrad but with a decaying average of squared gradients.

    cache = decay_rate * cache + (1 - decay_rate) * dw**2;
    w -= learning_rate * dw / (sqrt(cache) + epsilon).
    Config: learning_rate (1e-2), decay_rate (0.99), epsilon (1e-8), cache (zeros like w).
    """
    config = _prepare(w, dw, config, learning_rate=1e-2, decay_rate=0.99, epsilon=1e-8)
    decay = config["decay_rate"]
    next_w = _scaled_step(w, dw, config, decay)
    if next_w is not None:
        return next_w, config
    cache = decay * config["cache"] + (1 - decay) * dw**2
    config["cache"] = cache
    sqrt = get_array_module(w).sqrt
    return w - config["learning_rate"] * dw / (sqrt(cache) + config["epsilon"]), config


def adam(w, dw, config=None):
    """Adam: momentum on the gradient (m) and on its square (v), both bias-corrected.

    t += 1 (before use);  m = beta1 m + (1 - beta1) dw;  v = beta2 v + (1 - beta2) dw**2;
    w -= learning_rate * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + epsilon).
    Config: learning_rate (1e-3), beta1 (0.9), beta2 (0.999), epsilon (1e-8), m, v (zeros
    like w), t (0).
    """
    config = _prepare(w, dw, config, learning_rate=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-8, t=0)
    b1, b2 = config["beta1"], config["beta2"]
    config["t"] += 1
    t = config["t"]
    compiled = _compiled(w, dw, _state(config, "m", w), _state(config, "v", w))
    if compiled is not None:
        flat, (next_w, config["m"], config["v"]), threads = compiled
        _kernels.adam_update(*flat, next_w.reshape(-1), config["m"].reshape(-1),
                             config["v"].reshape(-1), config["learning_rate"], b1, b2,
                             config["epsilon"], t, threads=threads)
        return next_w, config
    m = b1 * config["m"] + (1 - b1) * dw
    v = b2 * config["v"] + (1 - b2) * dw**2
    config["m"], config["v"] = m, v
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    sqrt = get_array_module(w).sqrt
    return w - config["learning_rate"] * m_hat / (sqrt(v_hat) + config["epsilon"]), config


UPDATE_RULES = {
    rule.__name__: rule for rule in (sgd, sgd_momentum, nesterov_momentum, adagrad, rmsprop, adam)
}


def get_update_rule(rule):
    """``rule`` as an update rule: a name in UPDATE_RULES or a callable ``(w, dw, config)``;
    ValueError for anything else, naming the choices."""
    if isinstance(rule, str):
        if rule not in UPDATE_RULES:
            raise ValueError(f'Invalid update_rule "{rule}"; choose one of '
                             f"{', '.join(UPDATE_RULES)} or pass a callable")
        return UPDATE_RULES[rule]
    if not callable(rule):
        raise ValueError("update_rule must be a name in convlab.optim or a callable")
    return rule
