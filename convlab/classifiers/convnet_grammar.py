"""The architecture grammar of ConvNet: a string such as "[conv3-32,bn,relu]x2,pool,fc10"
read into layer tokens (convnet_layers.parse_layer reads each token into its kind).

    spec  := item ("," item)*
    item  := layer | "[" spec "]x" N      (a group, written out N times)
    layer := a token matching one LayerKind's pattern (convnet_layers.KINDS)

Specs come from command lines and saved model files, so every size is bounded before
anything is expanded or built.
"""

import re

from convlab.classifiers.convnet_layers import VALID_KINDS

__all__ = ["MAX_LAYERS", "MAX_NESTING", "MAX_SPEC_CHARS", "expand_spec"]

# "[[relu]x1000]x1000" must fail at once, not after building a million layers.
MAX_SPEC_CHARS = 10_000
MAX_LAYERS = 1_000
MAX_NESTING = 8

def _split_top_level(spec):
    """Split spec at the commas outside brackets; ValueError on unbalanced brackets or
    groups nested deeper than MAX_NESTING."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(spec):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth < 0:
            raise ValueError(f"unbalanced ']' at position {i} of architecture {spec!r}")
        if depth > MAX_NESTING:
            raise ValueError(f"architecture nests groups deeper than {MAX_NESTING} levels")
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
    if len(spec) > MAX_SPEC_CHARS:
        raise ValueError(f"architecture is {len(spec)} characters long; at most "
                         f"{MAX_SPEC_CHARS} are accepted")
    spec = "".join(spec.split()).lower()
    tokens = []
    for item in _split_top_level(spec):
        group = re.fullmatch(r"\[(.*)\]x(\d+)", item)
        if group:
            repeat = int(group[2])
            if repeat < 1:
                raise ValueError(f"group {item!r} must repeat at least once")
            inner = expand_spec(group[1])
            # Checked before multiplying, so no oversized list is ever built.
            if len(tokens) + len(inner) * repeat > MAX_LAYERS:
                raise ValueError(f"architecture expands to more than {MAX_LAYERS} layers")
            tokens += inner * repeat
        elif not item or "[" in item or "]" in item:
            raise ValueError(
                f"malformed item {item!r} in architecture {spec!r}: expected a layer "
                f"({VALID_KINDS})"
            )
        else:
            tokens.append(item)
    if len(tokens) > MAX_LAYERS:
        raise ValueError(f"architecture expands to more than {MAX_LAYERS} layers")
    return tokens
