"""Conditioners: the networks that give a flow layer its transformer parameters.

A coupling or autoregressive layer maps each variable with a monotone
element-wise transformer ``tau(x_i; theta_i)``; the *conditioner* computes
``theta`` from the variables the layer may read.  Any network fits, as long as
it is a pair of pure functions (the style of every other part of jaxflows)::

    params = init(key, in_dim, out_dim, context_dim=None)
    theta  = apply(params, x, context)        # x: (in_dim,) -> theta: (out_dim,)

bundled in a :class:`Conditioner`.  ``x`` and ``theta`` are ONE event (layers
``vmap`` over batches); ``context`` is ``None`` or ``(context_dim,)``.  The
layer reshapes ``theta`` to ``(dim, num_params)``: row ``i`` parameterises
variable ``i``.  Params are a plain pytree, so ``fit``, checkpoints, ``vmap``
and sharding treat them like any other params.

Built in:

- :func:`mlp`: the coupling layers' MLP (``jaxflows.nn.mlp_init``), last layer
  zero so that every layer starts as the identity map;
- :func:`made`: MADE (Germain et al. 2015), the masked MLP of the
  autoregressive layers (MAF, Papamakarios et al. 2017; IAF, Kingma et al.
  2016), whose output for variable ``i`` reads only ``x_<i``.

Your own network:

- :func:`from_linen` wraps a ``flax.linen`` module; its params are the
  module's variables (a nested dict).  ``zero_last=True`` zeroes the layer that
  produces the output so that the flow layer starts at the identity, like the
  built-in networks.
- :class:`MaskedDense` and :func:`made_degrees` build *autoregressive* flax
  networks (defined in :mod:`jaxflows.masked`, re-exported here).  An autoregressive layer checks a user network when it is built
  (:func:`check_autoregressive`: a Jacobian on random inputs and params) and
  refuses one whose output for a variable reads that variable or a later one.
  The sequential direction of such a layer runs the reference ``lax.scan``
  (one full network pass per variable); the cached one-pass inversion reads
  MADE's internal layout and is for the built-in MADE only.

Flows built by a factory with ``conditioner=`` record the network in their
``config``: the built-in ones are rebuilt from it, a user network is named
there and must be passed again to rebuild the flow
(``jaxflows.load(path, conditioner=...)``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ._types import Array, Params
from .made import made_apply, made_config, made_init
from .masked import MaskedDense, check_autoregressive, made_degrees
from .mlp import ACTIVATIONS, check_hidden, mlp_apply, mlp_init

__all__ = [
    "Conditioner", "ConditionerError", "MaskedDense", "as_conditioner", "bind", "check_autoregressive",
    "conditioner_config", "conditioner_from_config", "from_linen", "made", "made_degrees", "mlp",
]


class ConditionerError(ValueError):
    """A flow config names a user network that was not given, or another one was."""


class Conditioner(NamedTuple):
    """A network as two pure functions (module docstring).

    - ``init(key, in_dim, out_dim, context_dim=None) -> params``
    - ``apply(params, x: (in_dim,), context: (context_dim,) or None) -> (out_dim,)``
    - ``config``: a JSON-able description recorded in a flow's config
      (``{"type": "mlp", ...}``, ``{"type": "made", ...}``,
      ``{"type": "flax.linen", "module": ...}``, or ``{"type": "custom", ...}``
      when left ``None``).
    - ``for_layer(in_dim, out_dim, context_dim) -> Conditioner`` (optional):
      for a network whose code depends on the layer's sizes, the conditioner
      for those sizes; a layer calls it once when it is built (see
      :func:`bind`).  ``None``: the same functions serve every size.

    Write one by hand for any JAX network::

        def init(key, in_dim, out_dim, context_dim=None):
            return {"w": jnp.zeros((in_dim, out_dim)), "b": jnp.zeros(out_dim)}

        def apply(params, x, context=None):
            return jnp.tanh(x) @ params["w"] + params["b"]

        cond = Conditioner(init, apply)
    """

    init: Callable[..., Params]
    apply: Callable[..., Array]
    config: Optional[Dict[str, Any]] = None
    for_layer: Optional[Callable[..., "Conditioner"]] = None


# ---------------------------------------------------------------------------
# Built-in networks
# ---------------------------------------------------------------------------

def _check_activation(activation) -> None:
    if callable(activation):
        return
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)} or a callable, got {activation!r}")


def mlp(hidden: Sequence[int] = (64, 64), activation: Union[str, Callable] = "relu") -> Conditioner:
    """The built-in coupling MLP (``jaxflows.nn.mlp_init``): dense layers of
    sizes ``hidden`` with ``activation`` (a name in ``jaxflows.nn.ACTIVATIONS``
    or a callable; only a name can be recorded in a flow's config); the
    context feeds the first layer; the last layer starts at zero."""
    hidden = check_hidden(hidden)
    _check_activation(activation)
    config = ({"type": "mlp", "hidden": list(hidden), "activation": activation}
              if isinstance(activation, str) else None)

    def init(key, in_dim, out_dim, context_dim=None):
        return mlp_init(key, (in_dim,) + hidden + (out_dim,), context_dim=context_dim)

    def apply(params, x, context=None):
        return mlp_apply(params, x, context, activation)

    return Conditioner(init, apply, config)


def made(hidden: Sequence[int] = (64, 64), activation: str = "relu", residual: bool = False) -> Conditioner:
    """The built-in MADE of the autoregressive layers (Germain et al. 2015).

    Given to :func:`jaxflows.bijectors.autoregressive` (or ``maf``/``iaf``/
    ``nsf``) it is exactly ``hidden=..., activation=..., residual=...``: the
    layer builds its MADE with the layer's variable order and keeps the cached
    one-pass inversion.  As a standalone :class:`Conditioner` (``init`` /
    ``apply``) it is a MADE in the natural order: output row ``i`` reads
    ``x[:i]`` (and the context).
    """
    hidden = check_hidden(hidden)
    _check_activation(activation)

    def _cfg(in_dim, out_dim, context_dim):
        if out_dim % in_dim:
            raise ValueError(f"a MADE over {in_dim} variables needs out_dim a multiple of {in_dim}, got {out_dim}")
        return made_config(in_dim, hidden, out_dim // in_dim, context_dim=context_dim, residual=residual)

    def init(key, in_dim, out_dim, context_dim=None):
        return made_init(key, _cfg(in_dim, out_dim, context_dim))

    def apply(params, x, context=None):
        in_dim = x.shape[-1]
        out_dim = params["out"]["b"].shape[-1]
        context_dim = None if context is None else context.shape[-1]
        cfg = _cfg(in_dim, out_dim, context_dim)
        return made_apply(params, x, cfg, np.arange(in_dim), context, activation).reshape(out_dim)

    return Conditioner(init, apply, {"type": "made", "hidden": list(hidden), "activation": activation,
                                     "residual": bool(residual)})


def is_made(conditioner) -> bool:
    """True for :func:`made`'s conditioner (autoregressive layers use their own MADE for it)."""
    return isinstance(conditioner, Conditioner) and (conditioner.config or {}).get("type") == "made"


# ---------------------------------------------------------------------------
# flax.linen
# ---------------------------------------------------------------------------

def _module_name(module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def from_linen(module, *, zero_last: bool = True, out_attr: str = "out_dim") -> Conditioner:
    """Turn a ``flax.linen`` module into a :class:`Conditioner`.

    ``module`` is called as ``module(x)`` for an unconditional layer and
    ``module(x, context)`` for a conditional one, on ONE event ``x: (in_dim,)``,
    and must return ``(out_dim,)``.  The layer fixes ``out_dim`` (``dim *
    num_params`` of its transformer), so give the module a field named
    ``out_attr`` (default ``"out_dim"``): ``init`` then builds
    ``module.clone(out_dim=out_dim)``.  A module without that field must
    already return ``out_dim`` values (checked at ``init``); ``module`` may
    also be a function ``out_dim -> module``.

    Params are the module's variables, ``{"params": {...}}``, a plain nested
    dict.  Modules with other variable collections (``batch_stats`` of
    ``BatchNorm``, ...) are refused: a conditioner must be a pure function of
    its params, so normalise with ``LayerNorm`` instead.

    ``zero_last=True`` (default) sets the kernel and bias of the submodule
    that produces the output (e.g. a final ``nn.Dense``) to zero at ``init``,
    so every flow layer starts as the identity map (every transformer is the
    identity at ``theta = 0``), as with the built-in networks.  If the output
    is not one submodule's output unchanged (a residual sum, a reshape),
    ``init`` says so: set ``zero_last=False`` and, if you want the identity
    start, give your last layer ``kernel_init=nn.initializers.zeros``.
    """
    make, name, text = _linen_source(module)
    needs_width = make is not None or out_attr in _field_names(module)

    def build(out_dim):
        if make is not None:
            m = make(out_dim)
            if not isinstance(m, nn.Module):
                raise TypeError(f"from_linen: the function given returned {type(m).__name__}, not a flax.linen Module")
            return m
        return module.clone(**{out_attr: out_dim}) if out_attr in _field_names(module) else module

    config = {"type": "flax.linen", "module": name, "repr": " ".join(text.replace("# attributes", "").split())[:500], "zero_last": bool(zero_last),
              "out_attr": out_attr}
    hint = (f"give the module a field {out_attr!r} for the output width" if make is None
            else "the function must build a module with that output width")
    init = _linen_init(build, name, zero_last, hint)

    def apply_for(out_dim):
        def apply(params, x, context=None):
            if out_dim is None and needs_width:
                raise RuntimeError(
                    f"from_linen: module {name} takes its output width from the layer; use the "
                    "conditioner inside a layer, or bind it first: conditioner.for_layer(in_dim, out_dim, "
                    "context_dim).apply(...)")
            return _call_linen(module if out_dim is None else build(out_dim), params, x, context)
        return apply

    def for_layer(in_dim, out_dim, context_dim=None):
        return Conditioner(init, apply_for(int(out_dim)), config)

    return Conditioner(init, apply_for(None), config, for_layer if needs_width else None)


def _linen_source(module):
    """``(make, name, text)``: ``make`` is the function ``out_dim -> Module`` (``None`` for a
    module given as is), ``name`` what a config records, ``text`` its description."""
    if isinstance(module, nn.Module):
        return None, _module_name(module), repr(module)
    if callable(module):
        name = f"{getattr(module, '__module__', '?')}.{getattr(module, '__qualname__', repr(module))}"
        return module, name, name
    raise TypeError(f"from_linen needs a flax.linen Module (or a function out_dim -> Module), "
                    f"got {type(module).__name__}")


def _field_names(module) -> set:
    return {f.name for f in dataclasses.fields(module)}


def _call_linen(m, variables, x, context, **kw):
    if context is None:
        return m.apply(variables, x, **kw)
    return m.apply(variables, x, context, **kw)


def _linen_init(build, name: str, zero_last: bool, hint: str):
    """``init(key, in_dim, out_dim, context_dim)`` of :func:`from_linen`: the module's
    variables, checked (``params`` only, output ``(out_dim,)``), last layer zeroed."""

    def init(key, in_dim, out_dim, context_dim=None):
        m = build(out_dim)
        dtype = jnp.zeros(()).dtype
        x = jnp.zeros((in_dim,), dtype)
        ctx = None if context_dim is None else jnp.zeros((context_dim,), dtype)
        # one compiled program: op by op, flax's init compiles every layer's ops separately
        variables = dict(jax.jit(lambda k: m.init(k, x) if ctx is None else m.init(k, x, ctx))(key))
        extra = sorted(set(variables) - {"params"})
        if extra:
            raise ValueError(
                f"from_linen: module {name} has variable collections {extra} besides 'params'; a "
                "conditioner must be a pure function of its params (use LayerNorm, not BatchNorm)")
        variables.setdefault("params", {})
        out = jax.eval_shape(lambda v: _call_linen(m, v, x, ctx), variables)
        if tuple(out.shape) != (out_dim,):
            raise ValueError(
                f"from_linen: module {name} returns shape {tuple(out.shape)} for one event of shape "
                f"({in_dim},), but the layer needs ({out_dim},) (dim * transformer.num_params); {hint}")
        if zero_last:
            variables = _zero_last(m, variables, x, ctx, name)
        return variables

    return init


def _zero_last(m, variables, x, ctx, name):
    """Zero the kernel (and bias) of the submodule whose output is the module's output."""
    calls = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            calls.append((tuple(context.module.scope.path), out))
        return out

    def traced(v):  # shapes only: which call returned the output is a property of the trace
        with nn.intercept_methods(interceptor):
            out = m.apply(v, x) if ctx is None else m.apply(v, x, ctx)
        paths.extend(path for path, o in calls if o is out and path)
        return out

    paths = []
    jax.eval_shape(traced, variables)
    params = variables["params"]

    def subtree(path):
        node = params
        for p in path:
            if not isinstance(node, dict) or p not in node:
                return None
            node = node[p]
        return node

    found = [path for path in paths if isinstance(subtree(path), dict) and "kernel" in subtree(path)]
    if not found:
        raise ValueError(
            f"from_linen(zero_last=True): no layer with a 'kernel' produces the output of module {name} "
            "unchanged (a residual sum, a reshape or an activation after the last layer hides it); "
            "pass zero_last=False, and give the last layer kernel_init=nn.initializers.zeros for an "
            "identity start")
    path = max(found, key=len)

    def zero(node, rest):
        node = dict(node)
        if rest:
            node[rest[0]] = zero(node[rest[0]], rest[1:])
        else:
            node = {k: (jnp.zeros_like(v) if k in ("kernel", "bias") else v) for k, v in node.items()}
        return node

    return {**variables, "params": zero(params, path)}


def as_conditioner(conditioner) -> Conditioner:
    """A :class:`Conditioner` from a ``Conditioner`` or a ``flax.linen`` module
    (wrapped by :func:`from_linen` with its defaults)."""
    if isinstance(conditioner, Conditioner):
        return conditioner
    if isinstance(conditioner, nn.Module):
        return from_linen(conditioner)
    raise TypeError(
        "conditioner must be a jaxflows.conditioners.Conditioner (init, apply) or a flax.linen Module, "
        f"got {type(conditioner).__name__}")


def bind(conditioner, in_dim: int, out_dim: int, context_dim: Optional[int] = None) -> Conditioner:
    """What a layer calls once when it is built: :func:`as_conditioner`, then
    ``for_layer(in_dim, out_dim, context_dim)`` when the network has one."""
    c = as_conditioner(conditioner)
    return c.for_layer(in_dim, out_dim, context_dim) if c.for_layer is not None else c


# ---------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------

def conditioner_config(conditioner) -> Dict[str, Any]:
    """The JSON-able description recorded in a flow's config."""
    c = as_conditioner(conditioner)
    if c.config is not None:
        return dict(c.config)
    return {"type": "custom", "name": getattr(c.apply, "__qualname__", repr(c.apply))}


def conditioner_from_config(desc: Dict[str, Any], given=None) -> Conditioner:
    """Rebuild a conditioner from its description.

    The built-in ``mlp``/``made`` are rebuilt from the description alone (a
    ``given`` one is used as is).  A user network cannot be rebuilt from a
    file: pass the same network as ``given`` (``jaxflows.load(path,
    conditioner=...)``); a flax module of another class is refused.
    """
    if not isinstance(desc, dict) or "type" not in desc:
        raise ValueError(f"bad conditioner description {desc!r}")
    kind = desc["type"]
    if given is not None:
        c = as_conditioner(given)
        if kind == "flax.linen" and not isinstance(given, Conditioner):
            c = from_linen(given, zero_last=desc.get("zero_last", True), out_attr=desc.get("out_attr", "out_dim"))
        got = conditioner_config(c)
        if kind == "flax.linen" and got.get("module") != desc.get("module"):
            raise ConditionerError(f"this flow was built with the flax module {desc.get('module')}, but the "
                             f"conditioner given is {got.get('type')} {got.get('module', '')}".rstrip())
        if kind != got.get("type") and kind in ("mlp", "made", "flax.linen"):
            raise ConditionerError(f"this flow was built with a {kind} conditioner, but the one given is "
                             f"{got.get('type')}")
        return c
    if kind == "mlp":
        return mlp(desc["hidden"], desc["activation"])
    if kind == "made":
        return made(desc["hidden"], desc["activation"], desc.get("residual", False))
    what = (f"the flax.linen module {desc.get('module')} ({desc.get('repr', '')[:200]})"
            if kind == "flax.linen" else f"a user network ({desc.get('name', kind)})")
    raise ConditionerError(
        f"this flow was built with {what}; a file holds its params but not its code: pass the same "
        f"network again, e.g. jaxflows.load(path, conditioner=...) or from_config(config, conditioner=...)")
