"""Core types: the Bijector, Transformer and Distribution protocols.

Everything in jaxflows is a NamedTuple of *pure functions* (the optax / stax
style): configuration lives in closures, arrays live in explicit parameter
pytrees that the caller owns.  Nothing here holds state.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax

Array = jax.Array
PRNGKey = jax.Array
Params = Any  # a pytree (nested dicts / tuples) of floating-point arrays


class Bijector(NamedTuple):
    """An invertible map as three pure functions.

    ``forward`` maps base -> data (z -> x, the sampling direction) and
    ``inverse`` maps data -> base (x -> z, the density direction), as in
    distrax and flowjax.  Both act on ONE event ``(dim,)`` (batch with
    ``jax.vmap``) and return the log-absolute-determinant of the Jacobian of
    the map they compute, a scalar ``()``:

    - ``params = init(key)``
    - ``x, log_det_fwd = forward(params, z, context=None)``
    - ``z, log_det_inv = inverse(params, x, context=None)`` with
      ``log_det_inv == -log_det_fwd`` at corresponding points.

    ``context`` is ``None`` or one context vector ``(context_dim,)``.
    """

    init: Callable[[PRNGKey], Params]
    forward: Callable[..., Tuple[Array, Array]]
    inverse: Callable[..., Tuple[Array, Array]]


class Transformer(NamedTuple):
    """A monotone element-wise map ``v = tau(u; theta)`` with per-element
    unconstrained parameters ``theta: (..., num_params)``.

    ``forward(u, theta) -> (v, log_abs_dv_du)`` and
    ``inverse(v, theta) -> (u, log_abs_du_dv)``; ``u`` has any shape ``s``,
    ``theta`` has shape ``s + (num_params,)`` and both log-derivatives have
    shape ``s`` (element-wise, not summed).  Every transformer is the identity
    at ``theta == 0`` so that conditioners whose last layer starts at zero
    start every flow layer at the identity map.
    """

    num_params: int
    forward: Callable[[Array, Array], Tuple[Array, Array]]
    inverse: Callable[[Array, Array], Tuple[Array, Array]]


class Distribution(NamedTuple):
    """A base density as pure functions over ONE event ``(dim,)``.

    - ``params = init(key)`` (``{}`` when there is nothing to learn)
    - ``log_prob(params, x) -> ()`` for ``x: (dim,)``
    - ``sample(params, key, sample_shape) -> sample_shape + (dim,)``

    ``config`` is ``{"name": ..., "kwargs": {...}}`` for the bases of
    ``jaxflows.distributions`` (so that a flow's config, and a checkpoint, can
    rebuild them with ``distributions.base_from_config``), ``None`` for a base
    made by hand or adapted from distrax.
    """

    init: Callable[[PRNGKey], Params]
    log_prob: Callable[[Params, Array], Array]
    sample: Callable[[Params, PRNGKey, Tuple[int, ...]], Array]
    dim: int
    config: Optional[Dict[str, Any]] = None
