"""Flow configs: what a factory records, and the checks a config passes before it is built.

A factory decorated with :func:`records_config` returns flows whose
``config`` is ``{"factory": name, "kwargs": every argument}``: JSON data that
:func:`jaxflows.models.from_config` turns back into the same flow.  A config
read from a file is untrusted, so it is checked field by field, against the
bounds below, before anything is allocated.
"""

from __future__ import annotations

import functools
import inspect
import json
from typing import Any, Dict, Mapping, Optional

import numpy as np

from ._types import Distribution
from .conditioners import conditioner_config

__all__ = ["records_config", "check_config_structure", "check_config_fields", "check_config_size",
           "CONFIG_KEYS", "MAX_DIM", "MAX_LAYERS", "MAX_WIDTH", "MAX_HIDDEN_LAYERS", "MAX_BINS",
           "MAX_PARAMS"]


class _NotDescribable(Exception):
    """A factory argument that a JSON config cannot describe (a hand-made base)."""


def _config_value(name: str, value):
    """``value`` (a factory argument) as JSON data the factory accepts back."""
    if name == "conditioner" and value is not None:  # a network: built-in by settings, a user's by name
        return conditioner_config(value)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, Distribution):
        if value.config is None:
            raise _NotDescribable(f"{name} is a hand-made Distribution without a config")
        return json.loads(json.dumps(value.config))
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_config_value(name, v) for v in value]
    raise _NotDescribable(f"{name}={type(value).__name__} has no config form")


def records_config(name: str):
    """Decorator for a flow factory: the flow it returns carries ``config =
    {"factory": name, "kwargs": every argument, defaults included}``, read off
    the factory's own signature, so a config always holds exactly what the
    factory takes.  An argument with no JSON form (a distrax or hand-made
    base) leaves ``config=None``: such a flow cannot be rebuilt from a file.
    """
    def wrap(factory):
        signature = inspect.signature(factory)

        @functools.wraps(factory)
        def build(*args, **kwargs):
            flow = factory(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            try:
                described = {k: _config_value(k, v) for k, v in bound.arguments.items()}
            except _NotDescribable:
                return flow._replace(config=None)
            return flow._replace(config={"factory": name, "kwargs": described})

        return build

    return wrap


# Bounds on what a config may ask for, checked before anything is built: a
# config read from a file must not make from_config allocate without limit.
MAX_DIM = 1_000_000
MAX_LAYERS = 10_000
MAX_WIDTH = 1_000_000
MAX_HIDDEN_LAYERS = 64
MAX_BINS = 10_000
MAX_PARAMS = 2 ** 32
# Top-level keys a flow config may hold.
CONFIG_KEYS = ("factory", "kwargs", "standardize")  # "standardize": see jaxflows.standardizing
_INT_BOUNDS = {"dim": (1, MAX_DIM), "num_layers": (1, MAX_LAYERS), "context_dim": (1, MAX_DIM),
               "num_bins": (1, MAX_BINS), "permutation_seed": (0, 2 ** 63 - 1)}


def _depth(obj, limit: int) -> bool:
    """Whether ``obj`` (JSON data) nests deeper than ``limit``; iterative, no recursion."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > limit:
            return True
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
    return False


def _min_num_params(kw: Dict[str, Any]) -> int:
    """A lower bound on the parameter count of the flow ``kw`` describes: every
    factory's layer is an MLP (or MADE) reading ``dim`` inputs through ``hidden``."""
    dim, layers = kw.get("dim", 1), kw.get("num_layers", 5)
    net = kw.get("conditioner")
    if isinstance(net, dict) and net.get("type") not in ("mlp", "made"):
        return layers  # a user network: its size is not in the config
    hidden = net.get("hidden", [64, 64]) if isinstance(net, dict) else kw.get("hidden", [64, 64])
    widths = [dim] + list(hidden) + [1]
    return layers * max(dim, sum(a * b for a, b in zip(widths[:-1], widths[1:])))


def check_config_structure(config, factories: Mapping[str, Any]) -> None:
    """``config`` is ``{"factory": a name in factories, "kwargs": {...}}`` whose keys are
    all arguments of that factory, and nests no deeper than any flow config."""
    if not isinstance(config, dict) or "factory" not in config or "kwargs" not in config:
        raise ValueError(f"a flow config must be a dict {{'factory': ..., 'kwargs': {{...}}}}, "
                         f"got {config!r:.200}")
    unknown = sorted(str(k) for k in config if k not in CONFIG_KEYS)
    if unknown:
        raise ValueError(f"flow config has unknown key(s) {unknown}; it may need a newer jaxflows")
    if _depth(config, 32):
        raise ValueError("flow config is nested deeper than any flow config")
    name, kw = config["factory"], config["kwargs"]
    if not isinstance(name, str) or name not in factories:
        raise ValueError(f"unknown flow factory {name!r:.100}; known factories: {sorted(factories)}")
    if not isinstance(kw, dict):
        raise ValueError(f"flow config kwargs must be a dict, got {type(kw).__name__}")
    accepted = inspect.signature(factories[name]).parameters
    unknown = sorted(str(k) for k in kw if k not in accepted)
    if unknown:
        raise ValueError(f"{name} takes no argument(s) {unknown}; the config may need a newer jaxflows")


def check_config_fields(kw: Dict[str, Any]) -> None:
    """Each factory argument in ``kw`` has a type and range a factory accepts
    (integers within ``_INT_BOUNDS``, ``hidden`` a short list of widths, ...)."""
    for key, value in kw.items():
        if key in _INT_BOUNDS:
            lo, hi = _INT_BOUNDS[key]
            if value is None and key == "context_dim":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ValueError(f"flow config {key}={value!r:.60} is not an integer in [{lo}, {hi}]")
        elif key == "hidden":
            if not isinstance(value, list) or len(value) > MAX_HIDDEN_LAYERS or not all(
                    isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= MAX_WIDTH
                    for h in value):
                raise ValueError(f"flow config hidden={value!r:.60} is not a list of at most "
                                 f"{MAX_HIDDEN_LAYERS} integers in [1, {MAX_WIDTH}]")
        elif key == "conditioner":
            if value is not None and not (isinstance(value, dict) and isinstance(value.get("type"), str)):
                raise ValueError(f"flow config conditioner must be a network description, got {value!r:.60}")
        elif key == "base":
            if not isinstance(value, (str, dict)):
                raise ValueError(f"flow config base must be a name or a base config, got {value!r:.60}")
        elif not (value is None or isinstance(value, (bool, int, float))
                  or (isinstance(value, str) and len(value) <= 256)):
            raise ValueError(f"flow config {key}={value!r:.60} is not a number, a flag or a name")


def check_config_size(kw: Dict[str, Any], max_params: Optional[int] = None) -> None:
    """The flow ``kw`` describes has at most ``max_params`` parameters (default ``MAX_PARAMS``),
    judged from a lower bound computed without building it."""
    limit = MAX_PARAMS if max_params is None else max_params
    need = _min_num_params(kw)
    if need > limit:
        raise ValueError(f"flow config describes a flow of at least {need} parameters, more than "
                         f"the {limit} allowed here")
