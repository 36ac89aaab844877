"""Flows: a bijector plus a base distribution, as a NamedTuple of pure functions.

``log p(x) = log p_base(z) + log|det dz/dx|`` with ``z, log_det = bijector.inverse(x)``.
Sampling is ``z ~ p_base``, ``x = bijector.forward(z)`` (z -> x); latent
inference is ``x -> z``.  Params: ``{"bijector": ..., "base": ...}``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_batch, check_context
from ._types import Array, Bijector, Distribution, Params
from .bijectors.autoregressive import iaf_layer, maf_layer
from .bijectors.combinators import stack
from .distributions import make_base


class Flow(NamedTuple):
    """A normalizing flow as pure functions.

    Shapes: ``x`` is ``(..., dim)``; ``context`` is ``None`` (unconditional) or
    ``(..., context_dim)``, broadcast against the batch shape of ``x``.

    - ``params = init(key)``
    - ``log_prob(params, x, context=None) -> (...)``
    - ``sample(params, key, sample_shape=(), context=None)`` returns
      ``sample_shape + context_batch_shape + (dim,)``: with a batched context
      ``(B, context_dim)`` it draws ``sample_shape`` samples per context row,
      shape ``sample_shape + (B, dim)``.
    - ``sample_and_log_prob(params, key, sample_shape=(), context=None)``
      returns ``(x, log_prob(x))`` from the forward pass alone (for an IAF: one
      parallel pass, no sequential inversion).
    - ``to_latent(params, x, context=None) -> z`` (latent inference, x -> z)
    - ``from_latent(params, z, context=None) -> x`` (generation / exact
      reconstruction, z -> x)

    ``config`` is ``{"factory": name, "kwargs": {...}}`` for flows built by a
    factory (so a checkpoint can rebuild the flow), else ``None``.
    """

    init: Callable
    log_prob: Callable
    sample: Callable
    sample_and_log_prob: Callable
    to_latent: Callable
    from_latent: Callable
    dim: int
    context_dim: Optional[int]
    bijector: Bijector
    base: Distribution
    config: Optional[Dict[str, Any]]


def _map_events(fn, x: Array, context: Optional[Array]):
    """Apply ``fn(x_event, context_event)`` over broadcast batch dimensions."""
    dim = x.shape[-1]
    if context is None:
        batch = x.shape[:-1]
        flat = jax.vmap(lambda xi: fn(xi, None))(x.reshape((-1, dim)))
    else:
        try:
            batch = jnp.broadcast_shapes(x.shape[:-1], context.shape[:-1])
        except ValueError:
            raise ValueError(
                f"batch shapes of x {tuple(x.shape)} and context {tuple(context.shape)} do not broadcast"
            ) from None
        xb = jnp.broadcast_to(x, batch + (dim,)).reshape((-1, dim))
        cb = jnp.broadcast_to(context, batch + context.shape[-1:]).reshape((-1, context.shape[-1]))
        flat = jax.vmap(fn)(xb, cb)
    return jax.tree_util.tree_map(lambda a: a.reshape(batch + a.shape[1:]), flat)


def transformed(
    bijector: Bijector,
    base: Union[str, Distribution],
    *,
    dim: int,
    context_dim: Optional[int] = None,
    config: Optional[Dict[str, Any]] = None,
) -> Flow:
    """Build a :class:`Flow` from any bijector and base (``"normal"``,
    ``"diag_normal"`` or a ``Distribution``)."""
    base = make_base(base, dim)

    def init(key):
        kb, kd = jax.random.split(key)
        return {"bijector": bijector.init(kb), "base": base.init(kd)}

    def log_prob(params, x, context=None):
        x = check_batch(x, dim, "x")
        context = check_context(context, context_dim, batched=True)

        def one(xi, ci):
            z, ld = bijector.inverse(params["bijector"], xi, ci)
            return base.log_prob(params["base"], z) + ld

        return _map_events(one, x, context)

    def _draw(params, key, sample_shape, context):
        context = check_context(context, context_dim, batched=True)
        if isinstance(sample_shape, int):
            sample_shape = (sample_shape,)
        ctx_batch = () if context is None else context.shape[:-1]
        z = base.sample(params["base"], key, tuple(sample_shape) + ctx_batch)

        def one(zi, ci):
            x, ld = bijector.forward(params["bijector"], zi, ci)
            return x, base.log_prob(params["base"], zi) - ld

        return _map_events(one, z, context)

    def sample(params, key, sample_shape=(), context=None):
        return _draw(params, key, sample_shape, context)[0]

    def sample_and_log_prob(params, key, sample_shape=(), context=None):
        return _draw(params, key, sample_shape, context)

    def to_latent(params, x, context=None):
        x = check_batch(x, dim, "x")
        context = check_context(context, context_dim, batched=True)
        return _map_events(lambda xi, ci: bijector.inverse(params["bijector"], xi, ci)[0], x, context)

    def from_latent(params, z, context=None):
        z = check_batch(z, dim, "z")
        context = check_context(context, context_dim, batched=True)
        return _map_events(lambda zi, ci: bijector.forward(params["bijector"], zi, ci)[0], z, context)

    return Flow(init, log_prob, sample, sample_and_log_prob, to_latent, from_latent,
                dim, context_dim, bijector, base, config)


def layer_orders(dim: int, num_layers: int, permutation: str = "reverse", seed: int = 0) -> np.ndarray:
    """Each layer's autoregressive order, shape ``(num_layers, dim)``.

    The permutation between layers is folded into the MADE masks: a layer
    that autoregresses in order ``o`` equals ``permute(o)``, a natural-order
    layer, ``permute(argsort(o))``.  ``"reverse"`` alternates natural and
    reversed orders (the MAF paper's default); ``"random"`` draws an
    independent order per layer from ``numpy.random.default_rng(seed)``;
    ``"none"`` keeps the natural order everywhere.
    """
    natural = np.arange(dim)
    if permutation == "reverse":
        orders = [natural if l % 2 == 0 else natural[::-1] for l in range(num_layers)]
    elif permutation == "random":
        rng = np.random.default_rng(seed)
        orders = [rng.permutation(dim) for _ in range(num_layers)]
    elif permutation == "none":
        orders = [natural] * num_layers
    else:
        raise ValueError(f"permutation must be 'reverse', 'random' or 'none', got {permutation!r}")
    return np.stack(orders).astype(np.int32)


def _autoregressive_flow(factory: str, make_layer, dim, num_layers, hidden, context_dim,
                         residual, activation, permutation, permutation_seed, base, min_scale):
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if context_dim is not None and context_dim < 1:
        raise ValueError(f"context_dim must be None or a positive integer, got {context_dim}")
    if not isinstance(activation, str):
        raise TypeError("activation must be a name (a string) so that checkpoints can rebuild the flow")
    hidden = tuple(int(h) for h in hidden)
    orders = layer_orders(dim, num_layers, permutation, permutation_seed)
    kwargs = dict(hidden=hidden, context_dim=context_dim, residual=residual,
                  activation=activation, min_scale=min_scale)
    bijector = stack(lambda order: make_layer(dim, order=order, **kwargs), num_layers, per_layer=orders)
    config = None if not isinstance(base, str) else {"factory": factory, "kwargs": dict(
        dim=int(dim), num_layers=int(num_layers), hidden=list(hidden), context_dim=context_dim,
        residual=bool(residual), activation=activation, permutation=permutation,
        permutation_seed=int(permutation_seed), base=base,
        min_scale=float(min_scale))}
    return transformed(bijector, base, dim=dim, context_dim=context_dim, config=config)


def maf(dim: int, *, num_layers: int = 5, hidden: Sequence[int] = (64, 64),
        context_dim: Optional[int] = None, residual: bool = False, activation: str = "relu",
        permutation: str = "reverse", permutation_seed: int = 0,
        base: Union[str, Distribution] = "normal", min_scale: float = 1e-3) -> Flow:
    """Masked autoregressive flow (Papamakarios et al. 2017).

    ``num_layers`` :func:`~jaxflows.bijectors.maf_layer` s, stacked under
    ``lax.scan``, each ``x_i = mu_i(x_<i) + sigma_i(x_<i) * z_i``:
    ``log_prob`` is one parallel MADE pass per layer, ``sample`` is ``dim``
    sequential passes per layer.  Between layers the variable order is
    permuted (``permutation``, see :func:`layer_orders`).
    """
    return _autoregressive_flow("maf", maf_layer, dim, num_layers, hidden, context_dim, residual,
                                activation, permutation, permutation_seed, base, min_scale)


def iaf(dim: int, *, num_layers: int = 5, hidden: Sequence[int] = (64, 64),
        context_dim: Optional[int] = None, residual: bool = False, activation: str = "relu",
        permutation: str = "reverse", permutation_seed: int = 0,
        base: Union[str, Distribution] = "normal", min_scale: float = 1e-3) -> Flow:
    """Inverse autoregressive flow (Kingma et al. 2016).

    Each layer is ``x_i = mu_i(z_<i) + sigma_i(z_<i) * z_i``: ``sample`` and
    ``sample_and_log_prob`` are one parallel pass per layer (IAF's home is
    variational inference, scoring its own samples), while ``log_prob`` of an
    arbitrary ``x`` is ``dim`` sequential passes per layer.
    """
    return _autoregressive_flow("iaf", iaf_layer, dim, num_layers, hidden, context_dim, residual,
                                activation, permutation, permutation_seed, base, min_scale)


FACTORIES: Dict[str, Callable[..., Flow]] = {"maf": maf, "iaf": iaf}


def from_config(config: Dict[str, Any]) -> Flow:
    """Rebuild a flow from its ``config`` (``{"factory": name, "kwargs": {...}}``)."""
    try:
        factory = FACTORIES[config["factory"]]
    except (KeyError, TypeError):
        raise ValueError(f"unknown flow config {config!r}; known factories: {sorted(FACTORIES)}") from None
    return factory(**config["kwargs"])
