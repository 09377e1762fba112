"""Search spaces for convlab.tune: which RunConfig fields a study draws, and how.

    loguniform:LOW:HIGH   a float drawn log-uniformly (learning rates, regularisation)
    uniform:LOW:HIGH      a float drawn uniformly (dropout keep probability)
    int:LOW:HIGH          an integer, LOW and HIGH included (widths, batch sizes)
    logint:LOW:HIGH       an integer drawn log-uniformly
    choice:A,B,...        one of the values (models, update rules; lists as 512-256)

Every value is checked with RunConfig's own validation when the space is parsed, so a
bad spec fails before any trial runs.
"""

import dataclasses
import math
from dataclasses import dataclass

from convlab.run import RunConfig

__all__ = ["KINDS", "Dimension", "parse_search", "search_space"]

KINDS = ("loguniform", "uniform", "int", "logint", "choice")
_FIELD_TYPES = {f.name: getattr(f.type, "__name__", str(f.type))  # "int", "float | None"
                for f in dataclasses.fields(RunConfig)}
# Fields a search may not draw: they say where the data is, not how to learn from it.
_NOT_SEARCHABLE = ("data", "cifar10_dir")


@dataclass(frozen=True)
class Dimension:
    """One searched RunConfig field: ``kind`` in KINDS, a range (low, high) or choices."""

    name: str
    kind: str
    low: float = None
    high: float = None
    choices: tuple = ()

    def suggest(self, trial):
        """The value an Optuna trial draws for this field."""
        if self.kind == "choice":
            # Optuna's categorical values are scalars: a list is drawn as its text "512-256".
            options = [_choice_key(c) if isinstance(c, list) else c for c in self.choices]
            picked = trial.suggest_categorical(self.name, options)
            return self.choices[options.index(picked)]
        if self.kind in ("int", "logint"):
            return trial.suggest_int(self.name, int(self.low), int(self.high),
                                     log=self.kind == "logint")
        return trial.suggest_float(self.name, self.low, self.high, log=self.kind == "loguniform")

    def spec(self):
        """The text form, as ``--search`` takes it."""
        if self.kind == "choice":
            return f"{self.name}=choice:{','.join(_choice_key(c) for c in self.choices)}"
        return f"{self.name}={self.kind}:{self.low:g}:{self.high:g}"


def _choice_key(value):
    return "-".join(map(str, value)) if isinstance(value, list) else str(value)


def _field_value(name, text):
    """A value for RunConfig field ``name`` from its text in a search spec."""
    kind = _FIELD_TYPES[name]
    text = text.strip()
    if text.lower() == "none" and "None" in kind:
        return None
    try:
        if kind == "bool":
            lowered = text.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return lowered in ("true", "1", "yes")
        if kind == "list":
            return [int(part) for part in text.split("-")]
        if "int" in kind:
            return int(text)
        if "float" in kind:
            return float(text)
    except ValueError:
        raise ValueError(f"search value {text!r} for {name} is not a {kind}"
                         + (" (write lists as 512-256)" if kind == "list" else "")) from None
    return text


def parse_search(name, spec=None):
    """A Dimension from ``"name=kind:args"`` (or ``name`` and ``"kind:args"``, or a tuple
    such as ``("loguniform", 1e-4, 1e-2)`` / ``("choice", ["adam", "sgd"])``). Every value
    is checked against RunConfig's own validation, so a bad spec fails before any trial."""
    if spec is None:
        if "=" not in name:
            raise ValueError(f"search {name!r} must look like NAME=KIND:ARGS, e.g. "
                             "lr=loguniform:1e-4:1e-2")
        name, spec = name.split("=", 1)
    name = name.strip().replace("-", "_")
    if name not in _FIELD_TYPES or name in _NOT_SEARCHABLE:
        searchable = ", ".join(n for n in _FIELD_TYPES if n not in _NOT_SEARCHABLE)
        raise ValueError(f"cannot search {name!r}: searchable fields are {searchable}")
    if isinstance(spec, (tuple, list)):
        kind, args = spec[0], list(spec[1:])
        if kind == "choice" and len(args) == 1 and isinstance(args[0], (list, tuple)):
            args = list(args[0])
    else:
        kind, _, rest = spec.partition(":")
        args = rest.split(",") if kind == "choice" else rest.split(":")
    kind = str(kind).strip().lower()
    if kind not in KINDS:
        raise ValueError(f"search kind {kind!r} for {name} is not one of {', '.join(KINDS)}")
    if kind == "choice":
        values = [_field_value(name, a) if isinstance(a, str) else a for a in args if a != ""]
        if not values:
            raise ValueError(f"choice for {name} lists no values")
        # As RunConfig spells them ("Reference" is "reference"), each one checked.
        return Dimension(name, kind, choices=tuple(_check_value(name, v) for v in values))
    numeric = "float" if kind in ("loguniform", "uniform") else "int"
    if numeric not in _FIELD_TYPES[name]:
        raise ValueError(f"{kind} needs a numeric field; {name} is a {_FIELD_TYPES[name]} "
                         "(use choice:...)")
    if len(args) != 2:
        raise ValueError(f"{kind} for {name} needs LOW:HIGH, got {spec!r}")
    try:
        low, high = (float(a) for a in args)
    except (TypeError, ValueError):
        raise ValueError(f"{kind} bounds for {name} must be numbers, got {spec!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ValueError(f"{kind} for {name} needs finite LOW < HIGH, got {low:g}:{high:g}")
    if kind in ("loguniform", "logint") and low <= 0:
        raise ValueError(f"{kind} for {name} needs LOW > 0, got {low:g}")
    if numeric == "int" and (low != int(low) or high != int(high)):
        raise ValueError(f"{kind} bounds for {name} must be integers, got {spec!r}")
    for value in (low, high):
        _check_value(name, int(value) if numeric == "int" else value)
    return Dimension(name, kind, low, high)


def _check_value(name, value):
    """``value`` as RunConfig stores it in field ``name``, after RunConfig's validation."""
    try:
        config = RunConfig(**{name: value})
        config.validate()
    except (TypeError, ValueError) as err:
        raise ValueError(f"search value {value!r} for {name}: {err}") from None
    return getattr(config, name)


def search_space(search):
    """The Dimensions (name -> Dimension) of a list of ``NAME=SPEC`` strings or a dict."""
    items = search.items() if isinstance(search, dict) else ((s, None) for s in search)
    space = {}
    for name, spec in items:
        dim = parse_search(name, spec)
        if dim.name in space:
            raise ValueError(f"{dim.name} is searched twice")
        space[dim.name] = dim
    if not space:
        raise ValueError("nothing to search: give at least one NAME=SPEC")
    return space
