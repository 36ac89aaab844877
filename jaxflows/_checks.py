"""Input validation at the public edges.

Shapes and dtypes are static under ``jit``, so every check here runs at trace
time and raises a plain ``ValueError``/``TypeError`` before XLA sees anything.
"""

from __future__ import annotations

from typing import Optional

import jax.numpy as jnp
import numpy as np


def as_float_array(x, name: str):
    """``jnp.asarray(x)`` that insists on a floating dtype."""
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        x = jnp.asarray(x)
        dtype = x.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{name} must be a floating-point array (float32 or float64), got dtype {dtype}; "
            f"convert it with {name}.astype('float32')"
        )
    return jnp.asarray(x)


def check_event(x, dim: int, name: str = "x"):
    """Validate ONE event of shape ``(dim,)``."""
    x = as_float_array(x, name)
    if x.shape != (dim,):
        raise ValueError(
            f"{name} must be one event of shape ({dim},), got shape {tuple(x.shape)}; "
            "bijectors act on one event, batch them with jax.vmap"
        )
    return x


def check_batch(x, dim: int, name: str = "x"):
    """Validate a batch of events of shape ``(..., dim)``."""
    x = as_float_array(x, name)
    if x.ndim < 1 or x.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (..., {dim}), got shape {tuple(x.shape)}")
    return x


def check_context(context, context_dim: Optional[int], *, batched: bool = False):
    """Validate a context: ``None`` iff ``context_dim is None``.

    One event's context has shape ``(context_dim,)``; with ``batched=True``
    any ``(..., context_dim)`` is accepted.
    """
    if context_dim is None:
        if context is not None:
            shape = tuple(np.shape(context))
            raise ValueError(
                f"this flow/bijector takes no context (context_dim=None), but a context of shape "
                f"{shape} was given; build it with context_dim={shape[-1] if shape else '...'} to condition on it"
            )
        return None
    if context is None:
        raise ValueError(
            f"this flow/bijector is conditional (context_dim={context_dim}): pass "
            f"context=... of shape {'(..., ' if batched else '('}{context_dim},)"
        )
    context = as_float_array(context, "context")
    if batched:
        if context.ndim < 1 or context.shape[-1] != context_dim:
            raise ValueError(
                f"context must have shape (..., {context_dim}), got shape {tuple(context.shape)}"
            )
    elif context.shape != (context_dim,):
        raise ValueError(
            f"context must have shape ({context_dim},) for one event, got shape {tuple(context.shape)}"
        )
    return context
