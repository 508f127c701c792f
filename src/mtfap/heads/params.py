"""The hyper-parameters of every head method, declared once: name, type and range.

Every door through which a value reaches a head checks it here: the scikit-learn estimators
(``fit`` and :func:`~mtfap.heads.registry.make_head_estimator`, so ``mtfap fit-heads``,
``sweep``, ``compare`` and saved heads), the torch heads (:func:`make_torch_heads`) and the
training config (``mtfap train --param``, config files, ``model.json``). A value is accepted
only if it has the declared type and is finite and inside the declared range; the error names
the method and the parameter::

    >>> check_params("graph", {"xi": float("nan")})
    Traceback (most recent call last):
    ...
    ValueError: graph heads: xi must be a finite number >= 0, got nan

The estimators and the torch modules of a method share most parameters; a few exist in one form
only (``max_iter`` for the estimators, ``seed`` for the torch module), hence ``forms``.
Defaults stay in the classes' signatures, where scikit-learn reads them.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mtfap.errors import did_you_mean

ESTIMATOR, TORCH = "estimator", "torch"
BOTH = (ESTIMATOR, TORCH)

SOLVERS = ("paper", "proximal")  # Scenario 1: Algorithms 1-2, or proximal gradient
GRAPH_STEPS = ("kalofolias", "paper")  # Scenario 2's graph step (mtfap.heads.graph_learning)
PRECISIONS = ("float32", "float64")


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: ``kind`` is float, int, bool, choice, groups, ranks or names.

    Numbers must be finite and lie in [low, high] (an open end where ``*_open``); ``optional``
    also admits None.
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    optional: bool = False
    forms: tuple[str, ...] = BOTH

    def describe(self) -> str:
        """What the parameter accepts, in words ("a finite number > 0")."""
        if self.kind == "choice":
            text = "one of " + ", ".join(map(repr, self.choices))
        elif self.kind == "bool":
            text = "true or false"
        elif self.kind == "groups":
            text = ("a grouping: a preset name (paper, regions), a .json/.yaml file or a "
                    "mapping group -> [attribute, ...]")
        elif self.kind == "ranks":
            text = "None, a whole number >= 1 or a mapping group -> whole number >= 1"
        elif self.kind == "names":
            text = "a list of names"
        else:
            text = "a whole number" if self.kind == "int" else "a finite number"
            bounds = []
            if self.low is not None:
                bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
            if self.high is not None:
                bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
            text += (" " + " and ".join(bounds)) if bounds else ""
        return text + (" (or None)" if self.optional else "")

    def check(self, value, method: str):
        """``value`` in its canonical type (int for whole numbers, float for numbers), or a
        ValueError naming ``method`` and the parameter."""
        if value is None and self.optional:
            return None
        checked = _CHECKS[self.kind](self, value)
        if checked is _BAD:
            typo = did_you_mean(value, self.choices) if isinstance(value, str) else ""
            raise ValueError(f"{method} heads: {self.name} must be {self.describe()}, "
                             f"got {value!r}" + (f".{typo}" if typo else ""))
        return checked


_BAD = object()


def _number(param: Param, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return _BAD
    value = float(value)
    if not math.isfinite(value):
        return _BAD
    if param.kind == "int":
        if not value.is_integer():
            return _BAD
        value = int(value)
    if param.low is not None and (value < param.low or (param.low_open and value == param.low)):
        return _BAD
    if param.high is not None and (value > param.high
                                   or (param.high_open and value == param.high)):
        return _BAD
    return value


def _boolean(param: Param, value):
    return value if isinstance(value, bool) else _BAD


def _choice(param: Param, value):
    return value if isinstance(value, str) and value in param.choices else _BAD


def _groups(param: Param, value):
    if isinstance(value, Path):
        return value
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, Mapping) and value and all(
            isinstance(k, str) and isinstance(v, (list, tuple))
            and all(isinstance(m, str) for m in v) for k, v in value.items()):
        return {k: list(v) for k, v in value.items()}
    return _BAD


def _ranks(param: Param, value):
    whole = Param(param.name, "int", low=1)
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            return _BAD
        checked = {k: _number(whole, v) for k, v in value.items()}
        return _BAD if _BAD in checked.values() else checked
    return _number(whole, value)


def _names(param: Param, value):
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return _BAD


_CHECKS = {"float": _number, "int": _number, "bool": _boolean, "choice": _choice,
           "groups": _groups, "ranks": _ranks, "names": _names}


def _nonneg(name, **kw):
    return Param(name, "float", low=0.0, **kw)


def _positive(name, **kw):
    return Param(name, "float", low=0.0, low_open=True, **kw)


def _count(name, low=1, **kw):
    return Param(name, "int", low=low, **kw)


# What every estimator and torch head has; then each method's own.
_COMMON = (
    Param("standardize", "bool"),
    Param("attributes", "names", optional=True, forms=(ESTIMATOR,)),
    Param("precision", "choice", choices=PRECISIONS, forms=(ESTIMATOR,)),
    _count("max_iter", forms=(ESTIMATOR,)),
    _positive("tol", forms=(ESTIMATOR,)),
)

PARAMS: dict[str, tuple[Param, ...]] = {
    "independent": (_nonneg("lam"), *_COMMON),
    "lowrank_sparse": (
        _nonneg("lam"), _nonneg("gamma"), Param("groups", "groups"),
        Param("ranks", "ranks", optional=True), Param("solver", "choice", choices=SOLVERS),
        _count("n_epochs", forms=(ESTIMATOR,)), _count("batch_size", forms=(ESTIMATOR,)),
        _positive("learning_rate", forms=(ESTIMATOR,)),
        _positive("smidas_rate", forms=(ESTIMATOR,)),
        _positive("smidas_rate", optional=True, forms=(TORCH,)),  # None: the optimiser's lr
        _count("n_probes", optional=True), _nonneg("init_lam", forms=(ESTIMATOR,)),
        _count("random_state", low=0, forms=(ESTIMATOR,)), _count("seed", low=0, forms=(TORCH,)),
        *_COMMON),
    "graph": (
        _nonneg("xi"), _positive("eps"), Param("graph_step", "choice", choices=GRAPH_STEPS),
        _positive("graph_sparsity"), _count("n_graph_steps", low=0, forms=(ESTIMATOR,)),
        Param("graph_threshold", "float", low=0.0, high=1.0, high_open=True), *_COMMON),
}


def method_params(method: str, form: str = ESTIMATOR) -> dict[str, Param]:
    """The declared parameters of ``method`` in ``form`` ("estimator" or "torch"), by name."""
    if not isinstance(method, str) or method not in PARAMS:
        raise ValueError(f"unknown head method {method!r}.{did_you_mean(method, PARAMS)} "
                         f"Methods: {', '.join(PARAMS)}")
    return {p.name: p for p in PARAMS[method] if form in p.forms}


def check_params(method: str, params: Mapping | None, form: str = ESTIMATOR) -> dict:
    """``params`` checked against the declaration of ``method`` (see the module docstring).

    Returns them in canonical types; an unknown name or a bad value raises ValueError naming
    the method and the parameter (with the closest known name for a typo).
    """
    declared = method_params(method, form)
    if params is None:
        return {}
    if not isinstance(params, Mapping):  # user input (a config file): ValueError, not TypeError
        raise ValueError(  # noqa: TRY004
            f"{method} heads: the parameters must be a mapping name -> value, "
            f"got {type(params).__name__}")
    checked = {}
    for name, value in params.items():
        if name not in declared:
            known = sorted(set(declared) - {"attributes"})
            raise ValueError(f"{method} heads have no parameter {name!r}."
                             f"{did_you_mean(str(name), known)} Parameters: {', '.join(known)}")
        checked[name] = declared[name].check(value, method)
    return checked


def read_value(text: str):
    """A parameter value typed on the command line (``--param lam=1e-3``): YAML (numbers,
    booleans, lists, mappings), with number-like words such as ``1e-3`` or ``nan`` read as
    numbers, so that the range check sees them (YAML 1.1 reads ``1e-3`` as a string)."""
    import yaml

    if not text.strip():
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value
