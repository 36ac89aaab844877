"""Composition as data: chain, invert and stack.

- ``chain(b1, b2, ...)``: params are the tuple of the parts' params.
- ``invert(b)``: same params, directions swapped.
- ``stack(b, n)``: n identical layers whose params are stacked along a new
  leading axis (vmapped init) and applied with ``lax.scan``, so compile time
  does not grow with ``n``.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from .._types import Bijector


def chain(*bijectors: Bijector) -> Bijector:
    """Compose bijectors; **the first listed acts first in ``forward``**.

    ``chain(b1, b2).forward(x) = b2.forward(b1.forward(x))`` and ``inverse``
    undoes them in reverse order (b2 first).  This is the order of a data
    pipeline, the opposite of distrax's ``Chain`` (which applies its last
    element first).  ``log_det`` is the sum of the parts' log-dets.
    Params: ``tuple(p_1, ..., p_n)``.
    """
    if not bijectors:
        raise ValueError("chain needs at least one bijector")
    for i, b in enumerate(bijectors):
        if not isinstance(b, Bijector):
            raise TypeError(f"chain argument {i} must be a Bijector, got {type(b).__name__}")

    def init(key):
        keys = jax.random.split(key, len(bijectors))
        return tuple(b.init(k) for b, k in zip(bijectors, keys))

    def forward(params, x, context=None):
        total = 0.0
        for b, p in zip(bijectors, params):
            x, ld = b.forward(p, x, context)
            total = total + ld
        return x, total

    def inverse(params, y, context=None):
        total = 0.0
        for b, p in zip(reversed(bijectors), reversed(params)):
            y, ld = b.inverse(p, y, context)
            total = total + ld
        return y, total

    return Bijector(init, forward, inverse)


def invert(b: Bijector) -> Bijector:
    """Swap directions: ``invert(b).forward = b.inverse`` and vice versa."""
    return Bijector(b.init, b.inverse, b.forward)


def stack(layer, n: int, *, per_layer: Optional[np.ndarray] = None) -> Bijector:
    """``n`` identical layers applied with ``lax.scan``.

    ``layer`` is a ``Bijector``, or, when ``per_layer`` is given, a function
    ``layer(per_layer[l]) -> Bijector`` that builds layer ``l`` from its slice
    of a static per-layer array (for example each layer's variable order).
    That array is scanned alongside the stacked params but never lives in
    them.  ``init`` must not depend on the per-layer slice.

    Params: the layer's params with a leading axis of size ``n`` (vmapped init).
    ``forward`` applies layer 0 first; ``inverse`` runs the scan in reverse.
    """
    if n < 1:
        raise ValueError(f"stack needs n >= 1 layers, got {n}")
    if per_layer is None:
        if not isinstance(layer, Bijector):
            raise TypeError("stack(layer, n): layer must be a Bijector (or pass per_layer=...)")
        make = lambda _: layer  # noqa: E731
        xs = jnp.zeros((n,))
        template = layer
    else:
        per_layer = np.asarray(per_layer)
        if per_layer.shape[0] != n:
            raise ValueError(f"per_layer must have leading axis n={n}, got shape {per_layer.shape}")
        make = layer
        xs = per_layer
        template = layer(per_layer[0])

    def init(key):
        return jax.vmap(template.init)(jax.random.split(key, n))

    def _run(direction, params, x, context, reverse):
        x = jnp.asarray(x)

        def step(carry, inputs):
            p, data = inputs
            x, total = carry
            x, ld = getattr(make(data), direction)(p, x, context)
            return (x, total + ld), None

        (x, total), _ = jax.lax.scan(
            step, (x, jnp.zeros((), x.dtype)), (params, xs), reverse=reverse
        )
        return x, total

    def forward(params, x, context=None):
        return _run("forward", params, x, context, False)

    def inverse(params, y, context=None):
        return _run("inverse", params, y, context, True)

    return Bijector(init, forward, inverse)
