"""Batching helpers shared by flows, distrax interop and variational inference.

A bijector and a base act on one event ``(dim,)``; these helpers map such
per-event functions over any leading batch shape, broadcasting a context
against it, and turn a ``sample_shape`` argument into a static shape.
"""

from __future__ import annotations

import operator
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from ._types import Array

__all__ = ["map_events", "static_shape"]


def map_events(fn, x: Array, context: Optional[Array], tile: Optional[int] = None):
    """Apply ``fn(x_event, context_event)`` over broadcast batch dimensions.

    ``x`` is ``(..., dim)`` and ``context`` is ``None`` (then ``fn`` gets
    ``None``) or ``(..., context_dim)``; their batch shapes broadcast, and the
    result keeps the broadcast batch shape in front of each output leaf.

    With ``tile``, a batch larger than ``tile`` events is mapped in tiles of
    that many (``lax.map(..., batch_size=tile)``): the sequential direction of
    an autoregressive flow keeps its per-step working set in cache that way.
    """
    dim = x.shape[-1]
    if context is None:
        batch = x.shape[:-1]
        args = (x.reshape((-1, dim)),)
        one = lambda a: fn(a[0], None)  # noqa: E731
    else:
        try:
            batch = jnp.broadcast_shapes(x.shape[:-1], context.shape[:-1])
        except ValueError:
            raise ValueError(
                f"batch shapes of x {tuple(x.shape)} and context {tuple(context.shape)} do not broadcast"
            ) from None
        xb = jnp.broadcast_to(x, batch + (dim,)).reshape((-1, dim))
        cb = jnp.broadcast_to(context, batch + context.shape[-1:]).reshape((-1, context.shape[-1]))
        args = (xb, cb)
        one = lambda a: fn(*a)  # noqa: E731
    n = args[0].shape[0]
    if tile is not None and n > tile:
        flat = jax.lax.map(one, args, batch_size=tile)
    else:
        flat = jax.vmap(one)(args)
    return jax.tree_util.tree_map(lambda a: a.reshape(batch + a.shape[1:]), flat)


def static_shape(sample_shape) -> tuple:
    """``sample_shape`` as a tuple of Python ints, or a ``TypeError`` that says how to jit.

    The number of samples fixes the output's shape, so under ``jax.jit`` it must be a
    compile-time constant: ``jax.jit(flow.sample, static_argnums=2)``, or close over it.
    """
    shape = (sample_shape,) if isinstance(sample_shape, (int, np.integer)) else sample_shape
    if isinstance(shape, jax.core.Tracer) or (
            isinstance(shape, (tuple, list)) and any(isinstance(s, jax.core.Tracer) for s in shape)):
        raise TypeError(
            "sample_shape was traced by jax.jit, but it fixes the output's shape and must be a "
            "constant: use jax.jit(flow.sample, static_argnums=2) (sample_shape as a tuple or int), "
            "or close over it: jax.jit(lambda params, key: flow.sample(params, key, (n,)))")
    try:
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"sample_shape must be an int or a tuple of ints, got {sample_shape!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"sample_shape must hold non-negative ints, got {sample_shape!r}")
    return shape
