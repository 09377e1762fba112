"""Convolutional networks described by a short architecture string.

    model = ConvNet("[conv3-32-nobias,bn,relu]x2,pool,[conv3-64-nobias,bn,relu]x2,pool,gap,fc10")
    model = ConvNet("reference")      # a preset: see ConvNet.PRESETS
    print(model)                      # one row per layer: output shape and parameter count

Grammar
-------
A spec is a comma-separated list of layers and groups; spaces and case are ignored::

    spec  := item ("," item)*
    item  := layer | "[" spec "]x" N        a group: the layers inside, repeated N times

with these layers (K, F, S, P, G, M, N integers; A and P may be decimals like 0.1):

    convK-F[-sS][-pP][-nobias]  K x K convolution with F filters, stride S (default 1) and
                                zero padding P (default (K - 1) // 2, which keeps H and W for
                                odd K at stride 1). -nobias drops the bias: put it on convs
                                followed by bn, whose beta makes a bias redundant.
    bn                          batchnorm: per channel over (N, H, W) on images (spatial
                                batchnorm), per feature over N on vectors.
    gnG                         spatial group normalization with G groups (G must divide C).
    relu | lrelu[A] | elu[A]    ReLU; leaky ReLU with slope A (default 0.01); ELU with
                                alpha A (default 1).
    pool | maxpoolK[-sS]        K x K max pooling with stride S (default K); pool = maxpool2.
    avgpoolK[-sS]               K x K average pooling with stride S (default K).
    gap                         global average pooling: (C, H, W) -> (C,).
    dropoutP                    inverted dropout keeping each unit with probability P; the
                                identity at test time.
    fcM                         affine layer to M units; flattens its input.
    res-F[-sS]                  residual block (He et al., 2016): conv3-F-sS-nobias, bn, relu,
                                conv3-F-nobias, bn, added to a shortcut, then relu. The shortcut
                                is the identity when the block keeps the shape (F = C, S = 1)
                                and otherwise a projection: conv1-F-sS-p0-nobias, bn.

The scores come from the last layer, which must be ``fc{num_classes}``: a final fc of any
other size is a ValueError, and a spec that does not end in fc gets ``fc{num_classes}``
appended (it flattens whatever comes before). Shapes are worked out when the model is built,
so a layer that does not fit its input fails there, with the layer named.

Names
-----
After groups expand (and the final fc is appended) the layers are numbered from 1 and named
by kind and position: "[conv3-8,relu]x2,fc10" has layers conv1, relu2, conv3, relu4, fc5
("pool" is a maxpool). Parameters are ``<layer>.W`` and ``<layer>.b`` for conv and fc
(W is (F, C, K, K) for conv, (D, M) for fc), ``<layer>.gamma`` and ``<layer>.beta`` for bn
(shape (C,)) and gn (shape (1, C, 1, 1)). A residual block res4 has ``res4.conv1.W``,
``res4.bn1.gamma``, ``res4.bn1.beta``, ``res4.conv2.W``, ``res4.bn2.*`` and, with a
projection, ``res4.shortcut.W`` and ``res4.shortcut_bn.*``. ``model.bn_params`` holds one
dict per batchnorm in the order the layers run (a block's shortcut_bn after its bn2).
"""

import re
from dataclasses import dataclass, field

import numpy as np

from convlab._checks import conv_output_size, pool_output_size
from convlab.classifiers.base import Classifier, init_std
from convlab.fast_layers import (
    avg_pool_backward_fast,
    avg_pool_forward_fast,
    conv_backward_fast,
    conv_forward_fast,
    global_avg_pool_backward_fast,
    global_avg_pool_forward_fast,
    max_pool_backward_fast,
    max_pool_forward_fast,
)
from convlab.layers import (
    affine_backward,
    affine_forward,
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
    softmax_loss,
    spatial_batchnorm_backward,
    spatial_batchnorm_forward,
    spatial_groupnorm_backward,
    spatial_groupnorm_forward,
)

# ----------------------------------------------------------------------------- parsing

_NUMBER = r"\d*\.?\d+"

# kind -> (pattern of a whole token, its form for error messages). The named groups are the
# layer's arguments; a conv's "-nobias" is read from the token itself.
LAYER_KINDS = {
    "conv": (
        r"conv(?P<size>\d+)-(?P<filters>\d+)(?:-s(?P<stride>\d+))?(?:-p(?P<pad>\d+))?(?:-nobias)?",
        "convK-F[-sS][-pP][-nobias]",
    ),
    "bn": (r"bn", "bn"),
    "gn": (r"gn(?P<groups>\d+)", "gnG"),
    "relu": (r"relu", "relu"),
    "lrelu": (rf"lrelu(?P<alpha>{_NUMBER})?", "lrelu[A]"),
    "elu": (rf"elu(?P<alpha>{_NUMBER})?", "elu[A]"),
    "maxpool": (r"pool|maxpool(?P<size>\d+)(?:-s(?P<stride>\d+))?", "pool | maxpoolK[-sS]"),
    "avgpool": (r"avgpool(?P<size>\d+)(?:-s(?P<stride>\d+))?", "avgpoolK[-sS]"),
    "gap": (r"gap", "gap"),
    "dropout": (rf"dropout(?P<keep>{_NUMBER})", "dropoutP"),
    "fc": (r"fc(?P<units>\d+)", "fcM"),
    "res": (r"res-(?P<filters>\d+)(?:-s(?P<stride>\d+))?", "res-F[-sS]"),
}
VALID_KINDS = ", ".join(form for _, form in LAYER_KINDS.values()) + " and groups [...]xN"


def _split_top_level(spec):
    """Split spec at the commas outside brackets; ValueError on unbalanced brackets."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(spec):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth < 0:
            raise ValueError(f"unbalanced ']' at position {i} of architecture {spec!r}")
        if char == "," and depth == 0:
            items.append(spec[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"unclosed '[' in architecture {spec!r}")
    return [*items, spec[start:]]


def expand_spec(spec):
    """The layer tokens of a spec in order, each group [...]xN written out N times.

    >>> expand_spec("[conv3-8, relu]x2, pool")
    ['conv3-8', 'relu', 'conv3-8', 'relu', 'pool']
    """
    spec = "".join(spec.split()).lower()
    tokens = []
    for item in _split_top_level(spec):
        group = re.fullmatch(r"\[(.*)\]x(\d+)", item)
        if group:
            if int(group[2]) < 1:
                raise ValueError(f"group {item!r} must repeat at least once")
            tokens += expand_spec(group[1]) * int(group[2])
        elif not item or "[" in item or "]" in item:
            raise ValueError(
                f"malformed item {item!r} in architecture {spec!r}: expected a layer "
                f"({VALID_KINDS})"
            )
        else:
            tokens.append(item)
    return tokens


def parse_layer(token):
    """One layer token -> (kind, args): e.g. "conv3-64-s2" -> ("conv", {size: 3, ...})."""
    for kind, (pattern, _) in LAYER_KINDS.items():
        match = re.fullmatch(pattern, token)
        if match:
            args = {k: v for k, v in match.groupdict().items() if v is not None}
            return kind, {k: float(v) if "." in v else int(v) for k, v in args.items()}
    raise ValueError(f"unknown layer {token!r} in architecture; valid kinds: {VALID_KINDS}")


# ----------------------------------------------------------------------------- layers


@dataclass
class Layer:
    """One layer: what its forward and backward need, and its row in the summary."""

    kind: str  # key of BUILD / FORWARD / BACKWARD
    name: str  # prefix of its parameter names, e.g. "conv1" or "res4.conv1"
    token: str  # its text in the spec
    out_shape: tuple = ()  # output shape of one example: (C, H, W) or (D,)
    opts: dict = field(default_factory=dict)  # conv_param, pool_param, bn_param, ...
    body: list = field(default_factory=list)  # res blocks: the residual branch
    shortcut: list = field(default_factory=list)  # res blocks: projection; [] is identity

    def key(self, param):
        return f"{self.name}.{param}"


def _image(shape):
    if len(shape) != 3:
        raise ValueError(f"needs an image input (C, H, W), got a vector of shape {shape}")
    return shape


def _positive(**values):
    for name, value in values.items():
        if value < 1 or not isinstance(value, int):
            raise ValueError(f"{name} must be a positive integer, got {value}")


# Builders: (net, layer, args, input shape) -> output shape. They check the geometry and
# create the layer's parameters through the net, which owns the initialisation.


def _build_conv(net, layer, args, shape):
    C, H, W = _image(shape)
    K, F = args["size"], args["filters"]
    stride, pad = args.get("stride", 1), args.get("pad", (K - 1) // 2)
    _positive(filter_size=K, filters=F)
    H_out, W_out = conv_output_size(H, W, K, K, stride, pad)
    layer.opts["conv_param"] = {"stride": stride, "pad": pad}
    net._new_weight(layer.key("W"), (F, C, K, K), fan_in=C * K * K)
    if not layer.token.endswith("-nobias"):
        net._new_constant(layer.key("b"), (F,), 0.0)
    return (F, H_out, W_out)


def _build_bn(net, layer, args, shape):
    net._new_constant(layer.key("gamma"), shape[:1], 1.0)
    net._new_constant(layer.key("beta"), shape[:1], 0.0)
    layer.opts["bn_param"] = {"mode": "train"}
    net.bn_params.append(layer.opts["bn_param"])
    return shape


def _build_gn(net, layer, args, shape):
    C = _image(shape)[0]
    G = args["groups"]
    if G < 1 or C % G:
        raise ValueError(f"{G} groups do not divide {C} channels")
    layer.opts["G"] = G
    net._new_constant(layer.key("gamma"), (1, C, 1, 1), 1.0)
    net._new_constant(layer.key("beta"), (1, C, 1, 1), 0.0)
    return shape


def _build_activation(net, layer, args, shape):
    alpha = args.get("alpha", 0.01 if layer.kind == "lrelu" else 1.0)
    if layer.kind == "lrelu" and not 0 <= alpha < 1:
        raise ValueError(f"leaky relu slope must be in [0, 1), got {alpha}")
    if layer.kind == "elu" and alpha <= 0:
        raise ValueError(f"elu alpha must be positive, got {alpha}")
    layer.opts["alpha"] = alpha
    return shape


def _build_pool(net, layer, args, shape):
    C, H, W = _image(shape)
    size = args.get("size", 2)
    stride = args.get("stride", size)
    H_out, W_out = pool_output_size(H, W, size, size, stride)
    layer.opts["pool_param"] = {"pool_height": size, "pool_width": size, "stride": stride}
    return (C, H_out, W_out)


def _build_gap(net, layer, args, shape):
    return _image(shape)[:1]


def _build_dropout(net, layer, args, shape):
    keep = args["keep"]
    if not 0 < keep <= 1:
        raise ValueError(f"dropout keep probability must be in (0, 1], got {keep}")
    layer.opts["dropout_param"] = net._new_dropout_param(keep)
    return shape


def _build_fc(net, layer, args, shape):
    D, M = int(np.prod(shape)), args["units"]
    _positive(units=M)
    net._new_weight(layer.key("W"), (D, M), fan_in=D)
    net._new_constant(layer.key("b"), (M,), 0.0)
    return (M,)


def _build_res(net, layer, args, shape):
    C = _image(shape)[0]
    F, stride = args["filters"], args.get("stride", 1)
    body = [
        ("conv1", f"conv3-{F}-s{stride}-nobias"),
        ("bn1", "bn"),
        ("relu", "relu"),
        ("conv2", f"conv3-{F}-nobias"),
        ("bn2", "bn"),
    ]
    layer.body, out_shape = net._build(body, shape, prefix=layer.name + ".")
    if (F, stride) != (C, 1):
        projection = [("shortcut", f"conv1-{F}-s{stride}-p0-nobias"), ("shortcut_bn", "bn")]
        layer.shortcut, _ = net._build(projection, shape, prefix=layer.name + ".")
    return out_shape


# Forwards: (layer, x, params) -> (out, cache). Backwards: (layer, dout, cache, grads) -> dx,
# storing the layer's parameter gradients in grads under the parameters' names.


def _conv_forward(layer, x, p):
    W, b = p[layer.key("W")], p.get(layer.key("b"))  # b is None for -nobias
    return conv_forward_fast(x, W, b, layer.opts["conv_param"])


def _conv_backward(layer, dout, cache, grads):
    need_dx = layer.opts.get("need_dx", True)
    dx, grads[layer.key("W")], db = conv_backward_fast(dout, cache, need_dx=need_dx)
    if db is not None:
        grads[layer.key("b")] = db
    return dx


def _bn_forward(layer, x, p):
    bn = spatial_batchnorm_forward if x.ndim == 4 else batchnorm_forward
    return bn(x, p[layer.key("gamma")], p[layer.key("beta")], layer.opts["bn_param"])


def _bn_backward(layer, dout, cache, grads):
    bn = spatial_batchnorm_backward if dout.ndim == 4 else batchnorm_backward_alt
    dx, grads[layer.key("gamma")], grads[layer.key("beta")] = bn(dout, cache)
    return dx


def _gn_forward(layer, x, p):
    gamma, beta = p[layer.key("gamma")], p[layer.key("beta")]
    return spatial_groupnorm_forward(x, gamma, beta, layer.opts["G"], {})


def _gn_backward(layer, dout, cache, grads):
    dx, grads[layer.key("gamma")], grads[layer.key("beta")] = spatial_groupnorm_backward(
        dout, cache
    )
    return dx


def _fc_forward(layer, x, p):
    return affine_forward(x, p[layer.key("W")], p[layer.key("b")])


def _fc_backward(layer, dout, cache, grads):
    dx, grads[layer.key("W")], grads[layer.key("b")] = affine_backward(dout, cache)
    return dx


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


BUILD = {
    "conv": _build_conv,
    "bn": _build_bn,
    "gn": _build_gn,
    "relu": _build_activation,
    "lrelu": _build_activation,
    "elu": _build_activation,
    "maxpool": _build_pool,
    "avgpool": _build_pool,
    "gap": _build_gap,
    "dropout": _build_dropout,
    "fc": _build_fc,
    "res": _build_res,
}

FORWARD = {
    "conv": _conv_forward,
    "bn": _bn_forward,
    "gn": _gn_forward,
    "relu": lambda layer, x, p: relu_forward(x),
    "lrelu": lambda layer, x, p: leaky_relu_forward(x, layer.opts["alpha"]),
    "elu": lambda layer, x, p: elu_forward(x, layer.opts["alpha"]),
    "maxpool": lambda layer, x, p: max_pool_forward_fast(x, layer.opts["pool_param"]),
    "avgpool": lambda layer, x, p: avg_pool_forward_fast(x, layer.opts["pool_param"]),
    "gap": lambda layer, x, p: global_avg_pool_forward_fast(x),
    "dropout": lambda layer, x, p: dropout_forward(x, layer.opts["dropout_param"]),
    "fc": _fc_forward,
    "res": _res_forward,
}

BACKWARD = {
    "conv": _conv_backward,
    "bn": _bn_backward,
    "gn": _gn_backward,
    "relu": lambda layer, dout, cache, grads: relu_backward(dout, cache),
    "lrelu": lambda layer, dout, cache, grads: leaky_relu_backward(dout, cache),
    "elu": lambda layer, dout, cache, grads: elu_backward(dout, cache),
    "maxpool": lambda layer, dout, cache, grads: max_pool_backward_fast(dout, cache),
    "avgpool": lambda layer, dout, cache, grads: avg_pool_backward_fast(dout, cache),
    "gap": lambda layer, dout, cache, grads: global_avg_pool_backward_fast(dout, cache),
    "dropout": lambda layer, dout, cache, grads: dropout_backward(dout, cache),
    "fc": _fc_backward,
    "res": _res_backward,
}


def run_forward(layers, x, params):
    """Run x through layers in order. Returns the output and one cache per layer."""
    caches = []
    for layer in layers:
        x, cache = FORWARD[layer.kind](layer, x, params)
        caches.append(cache)
    return x, caches


def run_backward(layers, dout, caches, grads):
    """Backpropagate dout through layers in reverse, filling grads. Returns dx."""
    for layer, cache in zip(reversed(layers), reversed(caches), strict=True):
        dout = BACKWARD[layer.kind](layer, dout, cache, grads)
    return dout


def _shape_text(shape):
    return " x ".join(map(str, shape))


# ----------------------------------------------------------------------------- the model


class ConvNet(Classifier):
    """A convolutional network built from an architecture string (grammar in the module
    docstring) or the name of a preset in ``ConvNet.PRESETS``; softmax loss on top.

    input_dim: (C, H, W) of one image (or (D,) for a network of fc layers only).
    weight_scale: std of the initial conv and fc weights; None (default) uses He's
        sqrt(2 / fan_in) for each layer. Biases start at 0, bn/gn gamma at 1 and beta at 0.
    reg: L2 strength: the loss adds 0.5 * reg * sum(W**2) over conv and fc weights only.
    seed: seeds the initialisation (np.random.default_rng) and, as in FullyConnectedNet,
        fixes each dropout layer's mask so the loss is deterministic for gradient checks;
        the Solver draws fresh masks from its own generator while it trains.

    In ``loss`` batchnorm and dropout run in 'train' mode when y is given and in 'test' mode
    when it is not. Attributes: ``layers`` (list of Layer), ``architecture`` (the spec
    string, presets resolved), ``bn_params``; ``summary()`` describes the network.
    """

    PRESETS = {
        # About ThreeLayerConvNet (its default sizes): 825,046 parameters at 32x32.
        "threelayer": "conv7-32,relu,pool,fc100,relu,fc10",
        # VGG-style 3x3 stacks with batchnorm, global average pooling instead of a big fc:
        # 72,954 parameters at 32x32, and any input size works.
        "vgg_small": "[conv3-16-nobias,bn,relu]x2,pool,[conv3-32-nobias,bn,relu]x2,pool,"
        "[conv3-64-nobias,bn,relu]x2,gap,fc10",
        # The CIFAR ResNet widths of He et al. (16, 32, 64) with one block per stage:
        # 78,042 parameters at 32x32.
        "resnet_small": "conv3-16-nobias,bn,relu,res-16,res-32-s2,res-64-s2,gap,fc10",
        # The course's reference net. Every conv feeds a bn, so none has a bias:
        # 307,946 parameters at 32x32.
        "reference": "[conv3-32-nobias,bn,relu]x2,pool,[conv3-64-nobias,bn,relu]x2,pool,"
        "[conv3-128-nobias,bn,relu]x2,pool,fc10",
    }

    def __init__(
        self,
        architecture,
        input_dim=(3, 32, 32),
        num_classes=10,
        weight_scale=None,
        reg=0.0,
        dtype=np.float32,
        seed=None,
    ):
        if not isinstance(architecture, str):
            raise TypeError(
                f"architecture must be a spec string or preset name, got {architecture!r}"
            )
        spec = self.PRESETS.get(architecture, architecture)
        input_dim = tuple(int(d) for d in input_dim)
        if len(input_dim) not in (1, 3):
            raise ValueError(f"input_dim must be (C, H, W) or (D,), got {input_dim}")
        self.init_args = dict(
            architecture=spec,
            input_dim=list(input_dim),
            num_classes=num_classes,
            weight_scale=weight_scale,
            reg=reg,
            dtype=np.dtype(dtype).name,
        )
        self.architecture = spec
        self.input_shape = input_dim
        self.num_classes = num_classes
        self.reg = reg
        self.dtype = np.dtype(dtype)
        self.weight_scale = weight_scale
        self.params = {}
        self.bn_params = []
        self.dropout_params = []
        self._rng = np.random.default_rng(seed)
        self._seed = seed

        tokens = expand_spec(spec)
        if parse_layer(tokens[-1])[0] != "fc":
            tokens.append(f"fc{num_classes}")
        named = [(f"{parse_layer(t)[0]}{i}", t) for i, t in enumerate(tokens, start=1)]
        self.layers, out_shape = self._build(named, input_dim)
        if self.layers[0].kind == "conv":
            # Nothing uses the gradient with respect to the images: skip its GEMM and col2im.
            self.layers[0].opts["need_dx"] = False
        if out_shape != (num_classes,):
            raise ValueError(
                f"the last layer {tokens[-1]!r} gives {out_shape[0]} scores but num_classes is "
                f"{num_classes}; end the architecture with fc{num_classes} (or leave the fc out "
                f"and it is appended)"
            )

    def _build(self, named_tokens, shape, prefix=""):
        """Layers from (name, token) pairs, starting from input shape. Returns the layers
        and the output shape; ValueError naming the layer if one does not fit."""
        layers = []
        for name, token in named_tokens:
            kind, args = parse_layer(token)
            layer = Layer(kind, prefix + name, token)
            try:
                shape = BUILD[kind](self, layer, args, shape)
            except ValueError as err:
                raise ValueError(
                    f"layer {layer.name} ({token!r}) on input {_shape_text(shape)}: {err}"
                ) from None
            layer.out_shape = tuple(int(d) for d in shape)
            layers.append(layer)
        return layers, shape

    def _new_weight(self, name, shape, fan_in):
        std = init_std(self.weight_scale, fan_in)
        self.params[name] = (std * self._rng.standard_normal(shape)).astype(self.dtype)

    def _new_constant(self, name, shape, value):
        self.params[name] = np.full(shape, value, dtype=self.dtype)

    def _new_dropout_param(self, keep):
        param = {"mode": "train", "p": keep}
        if self._seed is not None:
            # Each dropout layer draws its own fixed seed so the layers' masks differ.
            param["seed"] = int(self._rng.integers(2**31))
        self.dropout_params.append(param)
        return param

    def loss(self, X, y=None):
        """X: (N, C, H, W). Returns scores (N, num_classes) when y is None, else (loss, grads)
        with grads keyed like params."""
        X = self._check_batch(X, y)
        self._set_mode(y)

        scores, caches = run_forward(self.layers, X, self.params)
        if y is None:
            return scores

        loss, dscores = softmax_loss(scores, y)
        grads = {}
        run_backward(self.layers, dscores, caches, grads)
        loss += self._l2([name for name in self.params if name.endswith(".W")], grads)
        return loss, grads

    def summary(self):
        """A table of the layers: name, spec token, output shape of one example, number of
        parameters (a res block counts all of its own), and the total."""
        rows = [("input", "", _shape_text(self.input_shape), "0")]
        for layer in self.layers:
            count = sum(
                p.size for name, p in self.params.items() if name.startswith(layer.name + ".")
            )
            rows.append((layer.name, layer.token, _shape_text(layer.out_shape), f"{count:,}"))
        total = sum(p.size for p in self.params.values())
        rows.append(("total", "", "", f"{total:,}"))
        header = ("layer", "spec", "output shape", "params")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]

        def line(row):
            cells = [cell.ljust(width) for cell, width in zip(row[:3], widths[:3], strict=True)]
            return "  ".join([*cells, row[3].rjust(widths[3])])

        rule = "-" * len(line(header))
        body = [line(row) for row in rows]
        return "\n".join(
            [f"ConvNet({self.architecture!r})", line(header), rule, *body[:-1], rule, body[-1]]
        )

    def __repr__(self):
        return self.summary()
