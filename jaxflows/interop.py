"""distrax interop: jaxflows objects as distrax objects, and distrax bases.

- ``to_distrax(bijector, params)`` -> a ``distrax.Bijector`` (``event_ndims_in
  = 1``) whose ``forward_and_log_det`` / ``inverse_and_log_det`` call our
  ``forward`` / ``inverse`` (same direction convention: forward is base -> data)
  with ``params`` fixed; inputs ``(..., dim)`` are mapped with ``vmap`` over all
  leading dimensions and log-dets have shape ``(...)``.
- ``to_distrax(flow, params)`` -> ``distrax.Transformed(base, bijector)``.  The
  base becomes ``distrax.MultivariateNormalDiag`` for the ``"normal"`` and
  ``"diag_normal"`` bases (``loc``, ``scale = exp(log_scale)``), otherwise a
  thin ``distrax.Distribution`` around our base's functions.
- ``distrax_base(dist, dim)`` -> a ``jaxflows.Distribution`` calling a distrax
  distribution, so that any distrax distribution can be a flow's base
  (``jaxflows.transformed(bijector, distrax_base(d), dim=...)``); defined in
  :mod:`jaxflows.distrax_support` (which the bases use without importing
  flows) and re-exported here.

The distrax objects hold ``params`` as pytree leaves (distrax objects are
jittable pytrees), so they can be built inside or outside ``jit``.  A
conditional bijector or flow becomes an unconditional distrax object by fixing
one ``context`` vector ``(context_dim,)``.

distrax is imported lazily (it is an optional dependency); its import-time
``DeprecationWarning`` about ``jax.core.pytype_aval_mappings`` is filtered.
"""

from __future__ import annotations

from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from ._checks import check_batch, check_context
from ._types import Array, Bijector, Distribution, Params
from .batching import map_events
from .distrax_support import distrax_base, is_distrax_distribution, load_distrax
from .flows import Flow

__all__ = ["to_distrax", "distrax_base", "is_distrax_distribution"]


def _bijector_class():
    """The ``distrax.Bijector`` subclass wrapping a jaxflows ``Bijector`` (built once)."""
    cls = getattr(_bijector_class, "cls", None)
    if cls is not None:
        return cls
    distrax = load_distrax()

    class JaxflowsBijector(distrax.Bijector):
        """A jaxflows ``Bijector`` with fixed ``params`` (and context) as a distrax bijector.

        - ``forward_and_log_det(x: (..., dim)) -> (y: (..., dim), log|det dy/dx|: (...))``
        - ``inverse_and_log_det(y) -> (x, log|det dx/dy|)``, ``= -forward log-det``
        """

        def __init__(self, bijector: Bijector, params: Params, context: Optional[Array] = None):
            super().__init__(event_ndims_in=1)
            self._fns = (bijector.forward, bijector.inverse)
            self.params = params
            self.context = context
            self.bijector = bijector

        def _apply(self, fn, x):
            if jnp.ndim(x) < 1:
                raise ValueError(f"x must have shape (..., dim), got a scalar of shape {jnp.shape(x)}")
            return map_events(lambda xi, ci: fn(self.params, xi, ci), x, self.context)

        def forward_and_log_det(self, x: Array) -> Tuple[Array, Array]:
            return self._apply(self._fns[0], x)

        def inverse_and_log_det(self, y: Array) -> Tuple[Array, Array]:
            return self._apply(self._fns[1], y)

        def same_as(self, other) -> bool:
            return (type(other) is type(self) and other._fns == self._fns
                    and other.params is self.params and other.context is self.context)

    _bijector_class.cls = JaxflowsBijector
    return JaxflowsBijector


def _distribution_class():
    """The ``distrax.Distribution`` subclass wrapping a jaxflows ``Distribution``."""
    cls = getattr(_distribution_class, "cls", None)
    if cls is not None:
        return cls
    distrax = load_distrax()

    class JaxflowsDistribution(distrax.Distribution):
        """A jaxflows base ``Distribution`` with fixed ``params``; event shape ``(dim,)``."""

        def __init__(self, dist: Distribution, params: Params):
            self._fns = (dist.log_prob, dist.sample)
            self._dim = int(dist.dim)
            self.params = params
            self.dist = dist

        @property
        def event_shape(self):
            return (self._dim,)

        def log_prob(self, value: Array) -> Array:
            value = check_batch(value, self._dim, "value")
            return map_events(lambda xi, _: self._fns[0](self.params, xi), value, None)

        def _sample_n(self, key, n: int) -> Array:
            return self._fns[1](self.params, key, (n,))

    _distribution_class.cls = JaxflowsDistribution
    return JaxflowsDistribution


def _base_to_distrax(flow: Flow, params: Params):
    distrax = load_distrax()
    name = (flow.config or {}).get("kwargs", {}).get("base")
    base_params = params["base"]
    dim = flow.dim
    if name == "normal":
        leaves = jax.tree_util.tree_leaves(params)
        dtype = leaves[0].dtype if leaves else jnp.float32
        return distrax.MultivariateNormalDiag(jnp.zeros((dim,), dtype), jnp.ones((dim,), dtype))
    if name == "diag_normal":
        return distrax.MultivariateNormalDiag(base_params["loc"], jnp.exp(base_params["log_scale"]))
    return _distribution_class()(flow.base, base_params)


def to_distrax(obj, params: Params, *, context: Optional[Array] = None):
    """Convert a jaxflows ``Bijector`` or ``Flow`` (with its ``params``) to distrax.

    - ``Bijector`` -> ``distrax.Bijector`` with ``event_ndims_in = 1``.
    - ``Flow`` -> ``distrax.Transformed(base, bijector)`` with
      ``log_prob(x) = base.log_prob(z) + log|det dz/dx|`` (``z = inverse(x)``),
      equal to ``flow.log_prob(params, x)``; ``params`` is the flow's
      ``{"bijector": ..., "base": ...}``.

    ``context``: ``None``, or for a conditional object one context vector
    ``(context_dim,)`` (or ``(..., context_dim)`` broadcasting against the
    batch of the inputs) that is fixed in the distrax object.
    """
    if isinstance(obj, Flow):
        context = check_context(context, obj.context_dim, batched=True)
        if not isinstance(params, dict) or set(params) != {"bijector", "base"}:
            raise ValueError("params must be the flow's params {'bijector': ..., 'base': ...} "
                             "(from flow.init or training)")
        distrax = load_distrax()
        bij = _bijector_class()(obj.bijector, params["bijector"], context)
        return distrax.Transformed(_base_to_distrax(obj, params), bij)
    if isinstance(obj, Bijector):
        if context is not None:
            context = jnp.asarray(context)
        return _bijector_class()(obj, params, context)
    raise TypeError(f"to_distrax takes a jaxflows Bijector or Flow, got {type(obj).__name__}")
