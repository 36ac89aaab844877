"""Input validation at the public edges.

Shapes and dtypes are static under ``jit``, so every check here runs at trace
time and raises a plain ``ValueError``/``TypeError`` before XLA sees anything.

Every bijector of :mod:`jaxflows.bijectors` is built by :func:`checked_bijector`:
the factory writes its two maps for already-validated inputs and the wrapper
checks, once per call and in one place, the event and the context, naming the
arguments in the convention of the docs: ``forward`` maps ``z -> x`` (base to
data) and ``inverse`` maps ``x -> z`` (data to base).  A message names the
bijector and the method (``act_norm.forward``), the argument (``z``, ``x`` or
``context``) and the shape or dtype it wanted and got.  Composites (``chain``,
``stack``) leave the checks to their parts, so an error names the part that
saw the bad input; ``invert`` swaps the labels with the maps.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax.numpy as jnp
import numpy as np

from ._types import Bijector


def _prefix(where: Optional[str]) -> str:
    return f"{where}: " if where else ""


def as_float_array(x, name: str, *, where: Optional[str] = None):
    """``jnp.asarray(x)`` that insists on a floating dtype (``TypeError`` otherwise)."""
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        x = jnp.asarray(x)
        dtype = x.dtype
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{_prefix(where)}{name} must be a floating-point array (float32 or float64), got dtype "
            f"{dtype}; convert it with {name}.astype('float32')"
        )
    return jnp.asarray(x)


def check_dim(dim, name: str = "dim") -> int:
    """``dim`` as an ``int``; ``ValueError`` unless it is a positive integer (not a bool)."""
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, (bool, np.bool_)) or dim < 1:
        raise ValueError(f"{name} must be a positive integer, got {dim!r}")
    return int(dim)


def check_event(x, dim: int, name: str = "x", *, where: Optional[str] = None):
    """Validate ONE event of shape ``(dim,)``."""
    x = as_float_array(x, name, where=where)
    if x.shape != (dim,):
        raise ValueError(
            f"{_prefix(where)}{name} must be one event of shape ({dim},), got shape {tuple(x.shape)}; "
            "bijectors act on one event, batch them with jax.vmap"
        )
    return x


def check_batch(x, dim: int, name: str = "x"):
    """Validate a batch of events of shape ``(..., dim)``."""
    x = as_float_array(x, name)
    if x.ndim < 1 or x.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (..., {dim}), got shape {tuple(x.shape)}")
    return x


def check_context(context, context_dim: Optional[int], *, batched: bool = False,
                  where: Optional[str] = None):
    """Validate a context: ``None`` iff ``context_dim is None``.

    One event's context has shape ``(context_dim,)``; with ``batched=True``
    any ``(..., context_dim)`` is accepted.  ``where`` (e.g. ``"coupling.forward"``)
    prefixes the messages.
    """
    at = _prefix(where)
    what = "bijector" if where else "flow/bijector"
    if context_dim is None:
        if context is not None:
            shape = tuple(np.shape(context))
            raise ValueError(
                f"{at}this {what} takes no context (context_dim=None), but a context of shape "
                f"{shape} was given; build it with context_dim={shape[-1] if shape else '...'} to condition on it"
            )
        return None
    if context is None:
        raise ValueError(
            f"{at}this {what} is conditional (context_dim={context_dim}): pass "
            f"context=... of shape {'(..., ' if batched else '('}{context_dim},)"
        )
    context = as_float_array(context, "context", where=where)
    if batched:
        if context.ndim < 1 or context.shape[-1] != context_dim:
            raise ValueError(
                f"{at}context must have shape (..., {context_dim}), got shape {tuple(context.shape)}"
            )
    elif context.shape != (context_dim,):
        raise ValueError(
            f"{at}context must have shape ({context_dim},) for one event, got shape {tuple(context.shape)}"
        )
    return context


class BijectorSpec(NamedTuple):
    """What :func:`checked_bijector` validates: a name for messages, the event size
    and the context size (``None``: the bijector takes no context)."""

    name: str
    dim: int
    context_dim: Optional[int]


def checked_bijector(name: str, dim: int, init: Callable, forward: Callable, inverse: Callable,
                     *, context_dim: Optional[int] = None) -> Bijector:
    """``Bijector(init, forward, inverse)`` with validated inputs.

    ``forward(params, z, context)`` and ``inverse(params, x, context)`` are
    called with ``z``/``x`` a floating array of shape ``(dim,)`` and ``context``
    ``None`` (when ``context_dim is None``) or a floating array
    ``(context_dim,)``; anything else raises before they run (module
    docstring).  The returned maps carry ``.spec`` (a :class:`BijectorSpec`)
    and ``.unchecked`` (the map as given), which :func:`relabel` and
    :func:`swapped` reuse so that a wrapped bijector is checked once.
    """
    dim = check_dim(dim)
    if context_dim is not None:
        context_dim = check_dim(context_dim, "context_dim")
    spec = BijectorSpec(name, dim, context_dim)
    at_fwd, at_inv = f"{name}.forward", f"{name}.inverse"

    def checked_forward(params, z, context=None):
        z = check_event(z, dim, "z", where=at_fwd)
        context = check_context(context, context_dim, where=at_fwd)
        return forward(params, z, context)

    def checked_inverse(params, x, context=None):
        x = check_event(x, dim, "x", where=at_inv)
        context = check_context(context, context_dim, where=at_inv)
        return inverse(params, x, context)

    for fn, raw in ((checked_forward, forward), (checked_inverse, inverse)):
        fn.spec, fn.unchecked = spec, raw
    return Bijector(init, checked_forward, checked_inverse)


def bijector_spec(b) -> Optional[BijectorSpec]:
    """The :class:`BijectorSpec` of a bijector built by :func:`checked_bijector`
    (both maps still its own), else ``None``."""
    spec = getattr(b.forward, "spec", None)
    if spec is None or getattr(b.inverse, "spec", None) is not spec:
        return None
    return spec


def relabel(b: Bijector, name: str) -> Bijector:
    """The same checked bijector under another name in its messages (``b`` unchanged
    when it was not built by :func:`checked_bijector`)."""
    spec = bijector_spec(b)
    if spec is None:
        return b
    return checked_bijector(name, spec.dim, b.init, b.forward.unchecked, b.inverse.unchecked,
                            context_dim=spec.context_dim)


def swapped(b: Bijector) -> Optional[Bijector]:
    """``b`` with its directions swapped and checked under the swapped labels
    (its ``inverse`` becomes ``forward`` and reads ``z``), named
    ``invert(name)``; ``None`` when ``b`` was not built by :func:`checked_bijector`."""
    spec = bijector_spec(b)
    if spec is None:
        return None
    inner = spec.name[len("invert("):-1] if spec.name.startswith("invert(") else None
    name = inner if inner is not None else f"invert({spec.name})"
    return checked_bijector(name, spec.dim, b.init, b.inverse.unchecked, b.forward.unchecked,
                            context_dim=spec.context_dim)
