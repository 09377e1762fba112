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

The layer kinds are records in :mod:`convlab.classifiers.convnet_layers` (``KINDS``).

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

import numpy as np

from convlab.classifiers.base import Classifier
from convlab.classifiers.convnet_grammar import expand_spec
from convlab.classifiers.convnet_layers import (
    KINDS,
    Builder,
    Layer,
    LayerTimes,
    parse_layer,
    run_backward,
    run_forward,
    shape_text,
)
from convlab.layers import softmax_loss

__all__ = ["KINDS", "ConvNet", "Layer", "LayerTimes", "expand_spec", "parse_layer"]


class ConvNet(Classifier):
    """A convolutional network built from an architecture string (grammar in the module
    docstring) or the name of a preset in ``ConvNet.PRESETS``; softmax loss on top.

    input_dim: (C, H, W) of one image (or (D,) for a network of fc layers only).
    weight_scale: std of the initial conv and fc weights; None (default) uses He's
        sqrt(2 / fan_in) for each layer, scaled down for the final (scores) layer so the
        initial loss is ln(num_classes). Biases start at 0, bn/gn gamma at 1 and beta at 0.
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
        builder = Builder(dtype, weight_scale, seed)
        tokens = expand_spec(spec)
        if parse_layer(tokens[-1])[0] != "fc":
            tokens.append(f"fc{num_classes}")
        named = [(f"{parse_layer(t)[0]}{i}", t) for i, t in enumerate(tokens, start=1)]
        builder.scores_layer = named[-1][0]
        self.layers, out_shape = builder.build(named, input_dim)
        self.params = builder.params
        self.bn_params = builder.bn_params
        self.dropout_params = builder.dropout_params
        self.layer_times = None  # a LayerTimes to profile the layer kinds
        if self.layers[0].kind == "conv":
            # Nothing uses the gradient with respect to the images: skip its GEMM and col2im.
            self.layers[0].opts["need_dx"] = False
        if out_shape != (num_classes,):
            raise ValueError(
                f"the last layer {tokens[-1]!r} gives {out_shape[0]} scores but num_classes is "
                f"{num_classes}; end the architecture with fc{num_classes} (or leave the fc out "
                f"and it is appended)"
            )

    def loss(self, X, y=None):
        """X: (N, C, H, W). Returns scores (N, num_classes) when y is None, else (loss, grads)
        with grads keyed like params."""
        X, y = self._check_batch(X, y)
        self._set_mode(y)

        scores, caches = run_forward(self.layers, X, self.params, self.layer_times)
        if y is None:
            return scores

        loss, dscores = softmax_loss(scores, y)
        grads = {}
        run_backward(self.layers, dscores, caches, grads, self.layer_times)
        loss += self._l2([name for name in self.params if name.endswith(".W")], grads)
        return loss, grads

    def summary(self):
        """A table of the layers: name, spec token, output shape of one example, number of
        parameters (a res block counts all of its own), and the total."""
        rows = [("input", "", shape_text(self.input_shape), "0")]
        for layer in self.layers:
            count = sum(
                p.size for name, p in self.params.items() if name.startswith(layer.name + ".")
            )
            rows.append((layer.name, layer.token, shape_text(layer.out_shape), f"{count:,}"))
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
