"""First-order update rules.

Each rule is ``rule(w, dw, config=None) -> (next_w, config)``: missing config keys are filled
with their defaults, and the returned config carries the rule's state (velocity, moments,
step count) into the next call. State arrays take w's dtype and device, so float32 stays
float32 and a GPU parameter keeps its state on the GPU.
"""

from convlab.backend import get_array_module


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


def sgd(w, dw, config=None):
    """Vanilla SGD: w -= learning_rate * dw. Config: learning_rate (1e-2)."""
    config = _prepare(w, dw, config, learning_rate=1e-2)
    return w - config["learning_rate"] * dw, config


def sgd_momentum(w, dw, config=None):
    """SGD with momentum: v = momentum * v - learning_rate * dw; w += v.

    Config: learning_rate (1e-2), momentum (0.9), velocity (zeros like w).
    """
    config = _prepare(w, dw, config, learning_rate=1e-2, momentum=0.9)
    v = config["momentum"] * _state(config, "velocity", w) - config["learning_rate"] * dw
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
    v_new = mu * v - config["learning_rate"] * dw
    config["velocity"] = v_new
    return w - mu * v + (1 + mu) * v_new, config


def adagrad(w, dw, config=None):
    """AdaGrad: per-parameter step shrinks with the sum of all squared gradients seen.

    cache += dw**2;  w -= learning_rate * dw / (sqrt(cache) + epsilon).
    Config: learning_rate (1e-2), epsilon (1e-8), cache (zeros like w).
    """
    config = _prepare(w, dw, config, learning_rate=1e-2, epsilon=1e-8)
    cache = _state(config, "cache", w) + dw**2
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
    cache = decay * _state(config, "cache", w) + (1 - decay) * dw**2
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
    m = b1 * _state(config, "m", w) + (1 - b1) * dw
    v = b2 * _state(config, "v", w) + (1 - b2) * dw**2
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
