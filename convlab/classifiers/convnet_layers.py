"""The layers of a ConvNet: one LayerKind record per kind, and parse_layer, which reads a
token into its kind (the grammar that splits an architecture string into tokens is in
convnet_grammar.py).

A LayerKind holds everything about one kind of layer: the pattern of its token in a spec,
the form shown in error messages, and three functions:

- ``build(builder, layer, args, shape) -> out_shape``: checks the geometry, creates the
  layer's parameters through the Builder and fills ``layer.opts``;
- ``forward(layer, x, params) -> (out, cache)``;
- ``backward(layer, dout, cache, grads) -> dx``, storing its parameter gradients in grads.

``KINDS`` maps each kind's name to its record; adding a layer kind is adding one record.
"""

import re
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from convlab._checks import check_int, check_keep_probability, conv_output_size, pool_output_size
from convlab.classifiers.base import init_std
from convlab.fast_layers import (
    affine_backward_fast,
    affine_forward_fast,
    avg_pool_backward_fast,
    avg_pool_forward_fast,
    conv_backward_fast,
    conv_forward_fast,
    global_avg_pool_backward_fast,
    global_avg_pool_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
    spatial_batchnorm_backward_fast,
    spatial_batchnorm_forward_fast,
    spatial_batchnorm_relu_backward_fast,
    spatial_batchnorm_relu_forward_fast,
)
from convlab.layers import (
    batchnorm_backward_alt,
    batchnorm_forward,
    dropout_backward,
    dropout_forward,
    elu_backward,
    elu_forward,
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
    spatial_groupnorm_backward,
    spatial_groupnorm_forward,
)

_NUMBER = r"\d*\.?\d+"


@dataclass
class Layer:
    """One layer: what its forward and backward need, and its row in the summary."""

    kind: str  # key of KINDS
    name: str  # prefix of its parameter names, e.g. "conv1" or "res4.conv1"
    token: str  # its text in the spec
    out_shape: tuple = ()  # output shape of one example: (C, H, W) or (D,)
    opts: dict = field(default_factory=dict)  # conv_param, pool_param, bn_param, ...
    body: list = field(default_factory=list)  # res blocks: the residual branch
    shortcut: list = field(default_factory=list)  # res blocks: projection; [] is identity

    def key(self, param):
        """The model's name for one of this layer's parameters, e.g. 'conv1.W'."""
        return f"{self.name}.{param}"


@dataclass(frozen=True)
class LayerKind:
    pattern: str  # regular expression of a whole token; named groups are the arguments
    form: str  # the token's form for error messages
    build: object
    forward: object
    backward: object


class Builder:
    """Creates a network's parameters and layer state while its layers are built: weights
    from ``rng`` (N(0, weight_scale^2), or He's sqrt(2 / fan_in) when weight_scale is None),
    and the bn_param / dropout_param dicts the model's mode switch reaches."""

    def __init__(self, dtype, weight_scale, seed):
        self.dtype = np.dtype(dtype)
        self.weight_scale = weight_scale
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.params = {}
        self.bn_params = []
        self.dropout_params = []
        self.scores_layer = None  # name of the layer computing the class scores

    def weight(self, name, shape, fan_in, scores=False):
        """A weight drawn from N(0, init_std**2); ``scores``: the layer computing the class
        scores (He initialisation scales it down)."""
        std = init_std(self.weight_scale, fan_in, scores)
        self.params[name] = (std * self.rng.standard_normal(shape)).astype(self.dtype)

    def constant(self, name, shape, value):
        """A parameter filled with ``value`` (biases, batchnorm gamma and beta)."""
        self.params[name] = np.full(shape, value, dtype=self.dtype)

    def bn_param(self):
        """A new batchnorm/groupnorm parameter dict, registered for the mode switch."""
        param = {"mode": "train"}
        self.bn_params.append(param)
        return param

    def dropout_param(self, keep):
        """A new dropout parameter dict with keep probability ``keep``, registered for the
        mode switch; with a model seed it carries a fixed per-layer mask seed."""
        param = {"mode": "train", "p": keep}
        if self.seed is not None:
            # Each dropout layer draws its own fixed seed so the layers' masks differ.
            param["seed"] = int(self.rng.integers(2**31))
        self.dropout_params.append(param)
        return param

    def build(self, named_tokens, shape, prefix=""):
        """Layers from (name, token) pairs, starting from input shape. Returns the layers
        and the output shape; ValueError naming the layer if one does not fit."""
        layers = []
        for name, token in named_tokens:
            kind, args = parse_layer(token)
            layer = Layer(kind, prefix + name, token)
            try:
                shape = KINDS[kind].build(self, layer, args, shape)
            except ValueError as err:
                raise ValueError(
                    f"layer {layer.name} ({token!r}) on input {shape_text(shape)}: {err}"
                ) from None
            layer.out_shape = tuple(int(d) for d in shape)
            layers.append(layer)
        return layers, shape


def shape_text(shape):
    """A shape as the summary table writes it: (32, 16, 16) -> '32 x 16 x 16'."""
    return " x ".join(map(str, shape))


def _image(shape):
    if len(shape) != 3:
        raise ValueError(f"needs an image input (C, H, W), got a vector of shape {shape}")
    return shape


# ----------------------------------------------------------------------------- conv


def _build_conv(builder, layer, args, shape):
    C, H, W = _image(shape)
    K, F = args["size"], args["filters"]
    stride, pad = args.get("stride", 1), args.get("pad", (K - 1) // 2)
    check_int(K, "filter size", 1)
    check_int(F, "filters", 1)
    H_out, W_out = conv_output_size(H, W, K, K, stride, pad)
    layer.opts["conv_param"] = {"stride": stride, "pad": pad}
    builder.weight(layer.key("W"), (F, C, K, K), fan_in=C * K * K)
    if not layer.token.endswith("-nobias"):
        builder.constant(layer.key("b"), (F,), 0.0)
    return (F, H_out, W_out)


def _conv_forward(layer, x, p):
    W, b = p[layer.key("W")], p.get(layer.key("b"))  # b is None for -nobias
    return conv_forward_fast(x, W, b, layer.opts["conv_param"])


def _conv_backward(layer, dout, cache, grads):
    need_dx = layer.opts.get("need_dx", True)
    dx, grads[layer.key("W")], db = conv_backward_fast(dout, cache, need_dx=need_dx)
    if db is not None:
        grads[layer.key("b")] = db
    return dx


# ----------------------------------------------------------------------------- normalization


def _build_bn(builder, layer, args, shape):
    builder.constant(layer.key("gamma"), shape[:1], 1.0)
    builder.constant(layer.key("beta"), shape[:1], 0.0)
    layer.opts["bn_param"] = builder.bn_param()
    return shape


def _bn_forward(layer, x, p):
    bn = spatial_batchnorm_forward_fast if x.ndim == 4 else batchnorm_forward
    return bn(x, p[layer.key("gamma")], p[layer.key("beta")], layer.opts["bn_param"])


def _bn_backward(layer, dout, cache, grads):
    bn = spatial_batchnorm_backward_fast if dout.ndim == 4 else batchnorm_backward_alt
    dx, grads[layer.key("gamma")], grads[layer.key("beta")] = bn(dout, cache)
    return dx


def _bn_relu_forward(layer, x, p):
    return spatial_batchnorm_relu_forward_fast(x, p[layer.key("gamma")], p[layer.key("beta")],
                                               layer.opts["bn_param"])


def _bn_relu_backward(layer, dout, cache, grads):
    dx, grads[layer.key("gamma")], grads[layer.key("beta")] = (
        spatial_batchnorm_relu_backward_fast(dout, cache))
    return dx


def _build_gn(builder, layer, args, shape):
    C = _image(shape)[0]
    G = args["groups"]
    if G < 1 or C % G:
        raise ValueError(f"{G} groups do not divide {C} channels")
    layer.opts["G"] = G
    builder.constant(layer.key("gamma"), (1, C, 1, 1), 1.0)
    builder.constant(layer.key("beta"), (1, C, 1, 1), 0.0)
    return shape


def _gn_forward(layer, x, p):
    gamma, beta = p[layer.key("gamma")], p[layer.key("beta")]
    return spatial_groupnorm_forward(x, gamma, beta, layer.opts["G"], {})


def _gn_backward(layer, dout, cache, grads):
    dx, grads[layer.key("gamma")], grads[layer.key("beta")] = spatial_groupnorm_backward(
        dout, cache
    )
    return dx


# ----------------------------------------------------------------------------- activations


def _build_activation(builder, layer, args, shape):
    alpha = args.get("alpha", 0.01 if layer.kind == "lrelu" else 1.0)
    if layer.kind == "lrelu" and not 0 <= alpha < 1:
        raise ValueError(f"leaky relu slope must be in [0, 1), got {alpha}")
    if layer.kind == "elu" and alpha <= 0:
        raise ValueError(f"elu alpha must be positive, got {alpha}")
    layer.opts["alpha"] = alpha
    return shape


# ----------------------------------------------------------------------------- pooling


def _build_pool(builder, layer, args, shape):
    C, H, W = _image(shape)
    size = args.get("size", 2)
    stride = args.get("stride", size)
    H_out, W_out = pool_output_size(H, W, size, size, stride)
    layer.opts["pool_param"] = {"pool_height": size, "pool_width": size, "stride": stride}
    return (C, H_out, W_out)


def _build_gap(builder, layer, args, shape):
    return _image(shape)[:1]


# ----------------------------------------------------------------------------- dropout, fc


def _build_dropout(builder, layer, args, shape):
    layer.opts["dropout_param"] = builder.dropout_param(check_keep_probability(args["keep"]))
    return shape


def _build_fc(builder, layer, args, shape):
    D, M = int(np.prod(shape)), args["units"]
    check_int(M, "units", 1)
    builder.weight(layer.key("W"), (D, M), fan_in=D, scores=layer.name == builder.scores_layer)
    builder.constant(layer.key("b"), (M,), 0.0)
    return (M,)


def _fc_forward(layer, x, p):
    return affine_forward_fast(x, p[layer.key("W")], p[layer.key("b")])


def _fc_backward(layer, dout, cache, grads):
    dx, grads[layer.key("W")], grads[layer.key("b")] = affine_backward_fast(dout, cache)
    return dx


# ----------------------------------------------------------------------------- residual


def _build_res(builder, layer, args, shape):
    C = _image(shape)[0]
    F, stride = args["filters"], args.get("stride", 1)
    body = [
        ("conv1", f"conv3-{F}-s{stride}-nobias"),
        ("bn1", "bn"),
        ("relu", "relu"),
        ("conv2", f"conv3-{F}-nobias"),
        ("bn2", "bn"),
    ]
    layer.body, out_shape = builder.build(body, shape, prefix=layer.name + ".")
    if (F, stride) != (C, 1):
        projection = [("shortcut", f"conv1-{F}-s{stride}-p0-nobias"), ("shortcut_bn", "bn")]
        layer.shortcut, _ = builder.build(projection, shape, prefix=layer.name + ".")
    return out_shape


def _res_forward(layer, x, p):
    residual, body_caches = run_forward(layer.body, x, p)
    shortcut, shortcut_caches = run_forward(layer.shortcut, x, p)  # x itself if identity
    out, relu_cache = relu_forward(residual + shortcut)
    return out, (body_caches, shortcut_caches, relu_cache)


def _res_backward(layer, dout, cache, grads):
    body_caches, shortcut_caches, relu_cache = cache
    dsum = relu_backward(dout, relu_cache)
    # x feeds both branches, so its gradient is the sum of theirs.
    dx_body = run_backward(layer.body, dsum, body_caches, grads)
    return dx_body + run_backward(layer.shortcut, dsum, shortcut_caches, grads)


# ----------------------------------------------------------------------------- the registry


KINDS = {
    "conv": LayerKind(
        r"conv(?P<size>\d+)-(?P<filters>\d+)(?:-s(?P<stride>\d+))?(?:-p(?P<pad>\d+))?(?:-nobias)?",
        "convK-F[-sS][-pP][-nobias]", _build_conv, _conv_forward, _conv_backward),
    "bn": LayerKind(r"bn", "bn", _build_bn, _bn_forward, _bn_backward),
    "gn": LayerKind(r"gn(?P<groups>\d+)", "gnG", _build_gn, _gn_forward, _gn_backward),
    "relu": LayerKind(r"relu", "relu", _build_activation,
                      lambda layer, x, p: relu_forward(x),
                      lambda layer, dout, cache, grads: relu_backward(dout, cache)),
    "lrelu": LayerKind(rf"lrelu(?P<alpha>{_NUMBER})?", "lrelu[A]", _build_activation,
                       lambda layer, x, p: leaky_relu_forward(x, layer.opts["alpha"]),
                       lambda layer, dout, cache, grads: leaky_relu_backward(dout, cache)),
    "elu": LayerKind(rf"elu(?P<alpha>{_NUMBER})?", "elu[A]", _build_activation,
                     lambda layer, x, p: elu_forward(x, layer.opts["alpha"]),
                     lambda layer, dout, cache, grads: elu_backward(dout, cache)),
    "maxpool": LayerKind(
        r"pool|maxpool(?P<size>\d+)(?:-s(?P<stride>\d+))?", "pool | maxpoolK[-sS]", _build_pool,
        lambda layer, x, p: max_pool_forward_fast(x, layer.opts["pool_param"]),
        lambda layer, dout, cache, grads: max_pool_backward_fast(dout, cache)),
    "avgpool": LayerKind(
        r"avgpool(?P<size>\d+)(?:-s(?P<stride>\d+))?", "avgpoolK[-sS]", _build_pool,
        lambda layer, x, p: avg_pool_forward_fast(x, layer.opts["pool_param"]),
        lambda layer, dout, cache, grads: avg_pool_backward_fast(dout, cache)),
    "gap": LayerKind(r"gap", "gap", _build_gap,
                     lambda layer, x, p: global_avg_pool_forward_fast(x),
                     lambda layer, dout, cache, grads: global_avg_pool_backward_fast(dout, cache)),
    "dropout": LayerKind(rf"dropout(?P<keep>{_NUMBER})", "dropoutP", _build_dropout,
                         lambda layer, x, p: dropout_forward(x, layer.opts["dropout_param"]),
                         lambda layer, dout, cache, grads: dropout_backward(dout, cache)),
    "fc": LayerKind(r"fc(?P<units>\d+)", "fcM", _build_fc, _fc_forward, _fc_backward),
    "res": LayerKind(r"res-(?P<filters>\d+)(?:-s(?P<stride>\d+))?", "res-F[-sS]", _build_res,
                     _res_forward, _res_backward),
}
VALID_KINDS = ", ".join(kind.form for kind in KINDS.values()) + " and groups [...]xN"


def parse_layer(token):
    """One layer token -> (kind, args): e.g. "conv3-64-s2" -> ("conv", {size: 3, ...})."""
    for name, kind in KINDS.items():
        match = re.fullmatch(kind.pattern, token)
        if match:
            args = {k: v for k, v in match.groupdict().items() if v is not None}
            return name, {k: float(v) if "." in v else int(v) for k, v in args.items()}
    raise ValueError(f"unknown layer {token!r} in architecture; valid kinds: {VALID_KINDS}")


# ----------------------------------------------------------------------------- running


class LayerTimes:
    """Wall time spent in each layer kind's forward and backward, for profiling: set
    ``model.layer_times = LayerTimes()`` on a ConvNet, run it, read ``seconds``
    ({(kind, 'forward' | 'backward'): total seconds}). A res block counts as 'res'."""

    def __init__(self):
        self.seconds = defaultdict(float)

    def timed(self, kind, phase, fn, *args):
        """fn(*args), its wall time added to ``seconds[(kind, phase)]``."""
        start = time.perf_counter()
        result = fn(*args)
        self.seconds[(kind, phase)] += time.perf_counter() - start
        return result


# Pairs of consecutive layers on images that run as one compiled kernel, reading and
# writing the activations once: (kind, next kind) -> (forward, backward) of the first
# layer's signature. The second layer's cache slot holds FUSED.
FUSED_PAIRS = {("bn", "relu"): (_bn_relu_forward, _bn_relu_backward)}
FUSED = "fused with the previous layer"


def _fused_pair(layers, i, x):
    """The (forward, backward) pair fusing layers[i] with layers[i + 1] on x, or None."""
    if i + 1 < len(layers) and x.ndim == 4:
        return FUSED_PAIRS.get((layers[i].kind, layers[i + 1].kind))
    return None


def _timed(times, name, phase, fn, *args):
    return fn(*args) if times is None else times.timed(name, phase, fn, *args)


def run_forward(layers, x, params, times=None):
    """Run x through layers in order. Returns the output and one cache per layer."""
    caches = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        pair = _fused_pair(layers, i, x)
        if pair is not None:
            name = f"{layer.kind}+{layers[i + 1].kind}"
            x, cache = _timed(times, name, "forward", pair[0], layer, x, params)
            caches += [cache, FUSED]
            i += 2
            continue
        x, cache = _timed(times, layer.kind, "forward", KINDS[layer.kind].forward, layer, x,
                          params)
        caches.append(cache)
        i += 1
    return x, caches


def run_backward(layers, dout, caches, grads, times=None):
    """Backpropagate dout through layers in reverse, filling grads. Returns dx."""
    i = len(layers) - 1
    while i >= 0:
        layer = layers[i]
        if caches[i] is FUSED:  # the pair (i - 1, i) ran as one: its backward is i - 1's
            first = layers[i - 1]
            backward = FUSED_PAIRS[(first.kind, layer.kind)][1]
            dout = _timed(times, f"{first.kind}+{layer.kind}", "backward", backward, first,
                          dout, caches[i - 1], grads)
            i -= 2
            continue
        dout = _timed(times, layer.kind, "backward", KINDS[layer.kind].backward, layer, dout,
                      caches[i], grads)
        i -= 1
    return dout
