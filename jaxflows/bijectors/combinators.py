"""Composition as data: chain, invert and stack.

- ``chain(b1, b2, ...)``: params are the tuple of the parts' params.
- ``invert(b)``: same params, directions swapped.
- ``stack(b, n)``: n identical layers whose params are stacked along a new
  leading axis (vmapped init) and applied with ``lax.scan``, so compile time
  does not grow with ``n``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import swapped
from .._types import Bijector


def chain(*bijectors: Bijector) -> Bijector:
    """Compose bijectors; **the first listed acts first in ``forward``**.

    ``chain(b1, b2).forward(z) = b2.forward(b1.forward(z))`` and ``inverse``
    undoes them in reverse order (b2 first).  This is the order of a data
    pipeline, the opposite of distrax's ``Chain`` (which applies its last
    element first).  ``log_det`` is the sum of the parts' log-dets.
    Params: ``tuple(p_1, ..., p_n)``.  Input checks are the parts' own: an
    error names the part that saw the input.
    """
    if not bijectors:
        raise ValueError("chain needs at least one bijector")
    for i, b in enumerate(bijectors):
        if not isinstance(b, Bijector):
            raise TypeError(f"chain argument {i} must be a Bijector, got {type(b).__name__}")

    def init(key):
        keys = jax.random.split(key, len(bijectors))
        return tuple(b.init(k) for b, k in zip(bijectors, keys))

    def forward(params, z, context=None):
        total = 0.0
        for b, p in zip(bijectors, params):
            z, ld = b.forward(p, z, context)
            total = total + ld
        return z, total

    def inverse(params, x, context=None):
        total = 0.0
        for b, p in zip(reversed(bijectors), reversed(params)):
            x, ld = b.inverse(p, x, context)
            total = total + ld
        return x, total

    return Bijector(init, forward, inverse)


def invert(b: Bijector) -> Bijector:
    """Swap directions: ``invert(b).forward = b.inverse`` and vice versa.

    Same params.  A jaxflows bijector's input checks follow the swap: the
    inverted one's ``forward`` reads ``z`` and its ``inverse`` reads ``x``,
    and its messages name it ``invert(name)``.
    """
    inverted = swapped(b)
    return inverted if inverted is not None else Bijector(b.init, b.inverse, b.forward)


class Layers(NamedTuple):
    """``n`` layers as :func:`stack` runs them: ``make(per_layer[l])`` builds layer ``l``.

    ``per_layer`` is the static per-layer array (zeros ``(n,)`` when every layer
    is the same bijector) scanned alongside the stacked params; ``template`` is
    layer 0, whose ``init`` every layer shares.
    """

    n: int
    make: Callable[[Any], Bijector]
    per_layer: Any
    template: Bijector

    def init(self, key):
        """The layers' params stacked on a leading axis ``n`` (vmapped init)."""
        return jax.vmap(self.template.init)(jax.random.split(key, self.n))

    def scan(self, body, carry, params, *, reverse: bool = False):
        """``lax.scan`` of ``body(carry, layer_l, params_l) -> (carry, out_l)`` over the
        layers (layer ``n - 1`` first with ``reverse=True``); returns ``(carry, outs)``."""

        def step(c, inputs):
            p, data = inputs
            return body(c, self.make(data), p)

        return jax.lax.scan(step, carry, (params, self.per_layer), reverse=reverse)


def layers(layer, n: int, *, per_layer: Optional[np.ndarray] = None, who: str = "stack") -> Layers:
    """Validate :func:`stack`'s ``(layer, n, per_layer)`` and return the :class:`Layers`;
    ``who`` names the caller in the messages."""
    if n < 1:
        raise ValueError(f"{who} needs n >= 1 layers, got {n}")
    if per_layer is None:
        if not isinstance(layer, Bijector):
            raise TypeError(f"{who}(layer, n): layer must be a Bijector (or pass per_layer=...)")
        return Layers(n, lambda _: layer, jnp.zeros((n,)), layer)
    per_layer = np.asarray(per_layer)
    if per_layer.ndim < 1 or per_layer.shape[0] != n:
        raise ValueError(f"per_layer must have leading axis n={n}, got shape {per_layer.shape}")
    return Layers(n, layer, per_layer, layer(per_layer[0]))


def stack(layer, n: int, *, per_layer: Optional[np.ndarray] = None) -> Bijector:
    """``n`` identical layers applied with ``lax.scan``.

    ``layer`` is a ``Bijector``, or, when ``per_layer`` is given, a function
    ``layer(per_layer[l]) -> Bijector`` that builds layer ``l`` from its slice
    of a static per-layer array (for example each layer's variable order).
    That array is scanned alongside the stacked params but never lives in
    them.  ``init`` must not depend on the per-layer slice.

    Params: the layer's params with a leading axis of size ``n`` (vmapped init).
    ``forward`` applies layer 0 first; ``inverse`` runs the scan in reverse.
    Input checks are the layers' own: an error names the layer that saw the input.
    """
    ls = layers(layer, n, per_layer=per_layer)

    def _run(direction, params, v, context, reverse):
        v = jnp.asarray(v)

        def body(carry, lay, p):
            v, total = carry
            v, ld = getattr(lay, direction)(p, v, context)
            return (v, total + ld), None

        (v, total), _ = ls.scan(body, (v, jnp.zeros((), v.dtype)), params, reverse=reverse)
        return v, total

    def forward(params, z, context=None):
        return _run("forward", params, z, context, False)

    def inverse(params, x, context=None):
        return _run("inverse", params, x, context, True)

    return Bijector(ls.init, forward, inverse)
