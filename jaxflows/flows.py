"""Flows: a bijector plus a base distribution, as a NamedTuple of pure functions.

``log p(x) = log p_base(z) + log|det dz/dx|`` with ``z, log_det = bijector.inverse(x)``.
Sampling is ``z ~ p_base``, ``x = bijector.forward(z)`` (z -> x); latent
inference is ``x -> z``.  Params: ``{"bijector": ..., "base": ...}``.
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_batch, check_context
from ._types import Array, Bijector, Distribution
from .bijectors.autoregressive import iaf_layer, maf_layer
from .bijectors.batchnorm import stack_with_batch_norm
from .bijectors.combinators import stack
from .bijectors.coupling import affine_coupling, alternating_mask, coupling, half_mask
from .bijectors.spline import rational_quadratic_spline
from .distributions import make_base
from .nn import made_config, sequential_batch_tile


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

    ``train_log_prob`` is ``None`` unless the flow has batch-norm layers
    (``batch_norm=True``); then it is the training-mode density
    ``train_log_prob(params, x: (B, dim), context=None) -> (log_prob (B,),
    new_params)`` that normalises with batch statistics and returns params
    with updated running statistics (see ``jaxflows.bijectors.batchnorm``).
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
    train_log_prob: Optional[Callable] = None


def _map_events(fn, x: Array, context: Optional[Array], tile: Optional[int] = None):
    """Apply ``fn(x_event, context_event)`` over broadcast batch dimensions.

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


def _static_shape(sample_shape) -> tuple:
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


def transformed(
    bijector: Bijector,
    base: Union[str, Distribution],
    *,
    dim: int,
    context_dim: Optional[int] = None,
    config: Optional[Dict[str, Any]] = None,
    forward_tile: Optional[int] = None,
    inverse_tile: Optional[int] = None,
) -> Flow:
    """Build a :class:`Flow` from any bijector and base (``"normal"``,
    ``"diag_normal"``, ``"mog"``, a ``Distribution`` or a distrax distribution).

    ``forward_tile`` / ``inverse_tile``: map batches through that direction of
    the bijector in tiles of this many events instead of one ``vmap`` (for a
    sequential direction whose working set should stay in cache).
    """
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

        return _map_events(one, x, context, inverse_tile)

    def _draw(params, key, sample_shape, context):
        context = check_context(context, context_dim, batched=True)
        sample_shape = _static_shape(sample_shape)
        ctx_batch = () if context is None else context.shape[:-1]
        z = base.sample(params["base"], key, tuple(sample_shape) + ctx_batch)

        def one(zi, ci):
            x, ld = bijector.forward(params["bijector"], zi, ci)
            return x, base.log_prob(params["base"], zi) - ld

        return _map_events(one, z, context, forward_tile)

    def sample(params, key, sample_shape=(), context=None):
        return _draw(params, key, sample_shape, context)[0]

    def sample_and_log_prob(params, key, sample_shape=(), context=None):
        return _draw(params, key, sample_shape, context)

    def to_latent(params, x, context=None):
        x = check_batch(x, dim, "x")
        context = check_context(context, context_dim, batched=True)
        return _map_events(lambda xi, ci: bijector.inverse(params["bijector"], xi, ci)[0], x, context,
                           inverse_tile)

    def from_latent(params, z, context=None):
        z = check_batch(z, dim, "z")
        context = check_context(context, context_dim, batched=True)
        return _map_events(lambda zi, ci: bijector.forward(params["bijector"], zi, ci)[0], z, context,
                           forward_tile)

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


def _check_common(dim, num_layers, context_dim, activation):
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if context_dim is not None and context_dim < 1:
        raise ValueError(f"context_dim must be None or a positive integer, got {context_dim}")
    if not isinstance(activation, str):
        raise TypeError("activation must be a name (a string) so that checkpoints can rebuild the flow")


def _train_log_prob(flow: Flow, train_inverse) -> Callable:
    """Training-mode ``log_prob`` of a flow whose bijector came from
    :func:`~jaxflows.bijectors.batchnorm.stack_with_batch_norm`."""
    dim, context_dim, base = flow.dim, flow.context_dim, flow.base

    def train_log_prob(params, x, context=None):
        x = check_batch(x, dim, "x")
        if x.ndim != 2:
            raise ValueError(f"train_log_prob needs a batch x of shape (B, {dim}), got {tuple(x.shape)}")
        context = check_context(context, context_dim, batched=True)
        if context is not None:
            context = jnp.broadcast_to(context, x.shape[:1] + (context_dim,))
        z, log_det, new_bijector = train_inverse(params["bijector"], x, context)
        log_base = jax.vmap(lambda zi: base.log_prob(params["base"], zi))(z)
        return log_base + log_det, {**params, "bijector": new_bijector}

    return train_log_prob


def _stacked_flow(make_layer, num_layers, per_layer, base, *, dim, context_dim, config, batch_norm,
                  tiles=None):
    """``num_layers`` layers ``make_layer(per_layer[l])`` under ``lax.scan``, with a
    batch-norm layer after each layer (density direction) when ``batch_norm``."""
    tiles = tiles or {}
    if not batch_norm:
        bijector = stack(make_layer, num_layers, per_layer=per_layer)
        return transformed(bijector, base, dim=dim, context_dim=context_dim, config=config, **tiles)
    bijector, train_inverse = stack_with_batch_norm(make_layer, num_layers, dim, per_layer=per_layer)
    flow = transformed(bijector, base, dim=dim, context_dim=context_dim, config=config, **tiles)
    return flow._replace(train_log_prob=_train_log_prob(flow, train_inverse))


def _autoregressive_flow(factory: str, make_layer, dim, num_layers, hidden, context_dim,
                         residual, activation, permutation, permutation_seed, base, min_scale,
                         batch_norm=False, method="cached"):
    _check_common(dim, num_layers, context_dim, activation)
    hidden = tuple(int(h) for h in hidden)
    orders = layer_orders(dim, num_layers, permutation, permutation_seed)
    kwargs = dict(hidden=hidden, context_dim=context_dim, residual=residual,
                  activation=activation, min_scale=min_scale, method=method)
    config = None if not isinstance(base, str) else {"factory": factory, "kwargs": dict(
        dim=int(dim), num_layers=int(num_layers), hidden=list(hidden), context_dim=context_dim,
        residual=bool(residual), activation=activation, permutation=permutation,
        permutation_seed=int(permutation_seed), base=base,
        min_scale=float(min_scale))}
    if config is not None and batch_norm:
        config["kwargs"]["batch_norm"] = True
    if config is not None and method != "cached":
        config["kwargs"]["method"] = method
    # the sequential direction (MAF: forward/sampling, IAF: inverse/density) is mapped in
    # cache-sized tiles; the parallel direction is one vmap
    tile = sequential_batch_tile(made_config(dim, hidden, 2, context_dim=context_dim))
    tiles = {"forward_tile": tile} if factory == "maf" else {"inverse_tile": tile}
    return _stacked_flow(lambda order: make_layer(dim, order=order, **kwargs), num_layers, orders,
                         base, dim=dim, context_dim=context_dim, config=config, batch_norm=batch_norm,
                         tiles=tiles)


def maf(dim: int, *, num_layers: int = 5, hidden: Sequence[int] = (64, 64),
        context_dim: Optional[int] = None, residual: bool = False, activation: str = "relu",
        permutation: str = "reverse", permutation_seed: int = 0,
        base: Union[str, Distribution] = "normal", min_scale: float = 1e-3,
        batch_norm: bool = False, method: str = "cached") -> Flow:
    """Masked autoregressive flow (Papamakarios et al. 2017).

    ``num_layers`` :func:`~jaxflows.bijectors.maf_layer` s, stacked under
    ``lax.scan``, each ``x_i = mu_i(x_<i) + sigma_i(x_<i) * z_i``:
    ``log_prob`` is one parallel MADE pass per layer, ``sample`` is ``dim``
    sequential steps per layer (by default at the arithmetic cost of one pass).  Between layers the variable order is
    permuted (``permutation``, see :func:`layer_orders`).  ``base`` is a name
    in ``jaxflows.distributions.BASES`` (``"normal"``, ``"diag_normal"``,
    ``"mog"``) or a ``Distribution``; ``batch_norm=True`` puts a batch-norm
    layer after every MADE layer in the density direction (see
    ``Flow.train_log_prob``).  ``method`` picks the sequential inversion used
    by ``sample``: ``"cached"`` (default: one MADE pass of arithmetic in all,
    see ``jaxflows.nn.made_sequential``) or ``"scan"`` (``dim`` full passes,
    the reference).
    """
    return _autoregressive_flow("maf", maf_layer, dim, num_layers, hidden, context_dim, residual,
                                activation, permutation, permutation_seed, base, min_scale,
                                batch_norm, method)


def iaf(dim: int, *, num_layers: int = 5, hidden: Sequence[int] = (64, 64),
        context_dim: Optional[int] = None, residual: bool = False, activation: str = "relu",
        permutation: str = "reverse", permutation_seed: int = 0,
        base: Union[str, Distribution] = "normal", min_scale: float = 1e-3,
        batch_norm: bool = False, method: str = "cached") -> Flow:
    """Inverse autoregressive flow (Kingma et al. 2016).

    Each layer is ``x_i = mu_i(z_<i) + sigma_i(z_<i) * z_i``: ``sample`` and
    ``sample_and_log_prob`` are one parallel pass per layer (IAF's home is
    variational inference, scoring its own samples), while ``log_prob`` of an
    arbitrary ``x`` is sequential (``method`` as in :func:`maf`).
    """
    return _autoregressive_flow("iaf", iaf_layer, dim, num_layers, hidden, context_dim, residual,
                                activation, permutation, permutation_seed, base, min_scale,
                                batch_norm, method)


def coupling_masks(dim: int, num_layers: int, mask: str = "alternate") -> np.ndarray:
    """Each coupling layer's mask (``True`` = conditioning), shape ``(num_layers, dim)``.

    ``"alternate"``: even coordinates condition in even layers, odd ones in odd
    layers; ``"half"``: the first ``ceil(dim / 2)`` coordinates condition in
    even layers, the rest in odd layers.  Consecutive layers are complementary,
    so every coordinate is transformed by every other layer.
    """
    if mask == "alternate":
        make = alternating_mask
    elif mask == "half":
        make = half_mask
    else:
        raise ValueError(f"mask must be 'alternate' or 'half', got {mask!r}")
    return np.stack([make(dim, l % 2) for l in range(num_layers)])


def realnvp(dim: int, *, num_layers: int = 5, hidden: Sequence[int] = (64, 64),
            context_dim: Optional[int] = None, activation: str = "relu", mask: str = "alternate",
            base: Union[str, Distribution] = "normal", min_scale: float = 1e-3,
            batch_norm: bool = False) -> Flow:
    """RealNVP (Dinh et al. 2017): ``num_layers`` affine coupling layers.

    Layer ``l`` keeps the coordinates of ``coupling_masks(dim, num_layers,
    mask)[l]`` and maps the others by ``x_i = mu_i + sigma_i * z_i`` with
    ``(mu, log sigma)`` from an MLP of the kept ones (and the context):
    ``log_prob`` and ``sample`` are both one parallel pass per layer.  Layers
    are stacked under ``lax.scan`` (the masks are scanned, never params).
    ``base`` and ``batch_norm`` as in :func:`maf`.
    """
    _check_common(dim, num_layers, context_dim, activation)
    hidden = tuple(int(h) for h in hidden)
    masks = coupling_masks(dim, num_layers, mask)
    config = None if not isinstance(base, str) else {"factory": "realnvp", "kwargs": dict(
        dim=int(dim), num_layers=int(num_layers), hidden=list(hidden), context_dim=context_dim,
        activation=activation, mask=mask, base=base, min_scale=float(min_scale),
        batch_norm=bool(batch_norm))}

    def make_layer(m):
        return affine_coupling(dim, m, min_scale=min_scale, hidden=hidden,
                               context_dim=context_dim, activation=activation)

    return _stacked_flow(make_layer, num_layers, masks, base, dim=dim, context_dim=context_dim,
                         config=config, batch_norm=batch_norm)


def nsf(dim: int, *, num_layers: int = 5, hidden: Sequence[int] = (64, 64), num_bins: int = 8,
        bound: float = 3.0, context_dim: Optional[int] = None, coupling_layers: bool = False,
        residual: bool = False, activation: str = "relu", permutation: str = "reverse",
        permutation_seed: int = 0, mask: str = "alternate",
        base: Union[str, Distribution] = "normal", batch_norm: bool = False) -> Flow:
    """Neural spline flow (Durkan et al. 2019) with rational-quadratic splines.

    Each layer maps ``x_i = tau(z_i; theta_i)`` with ``tau`` the
    ``rational_quadratic_spline(num_bins, bound)`` (identity outside
    ``[-bound, bound]``):

    - ``coupling_layers=False`` (default): an *autoregressive* NSF, the MAF
      kernel with the spline, ``theta_i = MADE(x_<i)``: ``log_prob`` is one
      parallel pass per layer, ``sample`` is sequential; orders permuted
      between layers as in :func:`maf` (``permutation``, ``residual``).
    - ``coupling_layers=True``: a coupling NSF, ``theta = MLP(x * mask)`` with
      masks as in :func:`realnvp` (``mask``): both directions parallel.

    ``base`` and ``batch_norm`` as in :func:`maf`.
    """
    _check_common(dim, num_layers, context_dim, activation)
    hidden = tuple(int(h) for h in hidden)
    spline = rational_quadratic_spline(int(num_bins), float(bound))
    config = None if not isinstance(base, str) else {"factory": "nsf", "kwargs": dict(
        dim=int(dim), num_layers=int(num_layers), hidden=list(hidden), num_bins=int(num_bins),
        bound=float(bound), context_dim=context_dim, coupling_layers=bool(coupling_layers),
        residual=bool(residual), activation=activation, permutation=permutation,
        permutation_seed=int(permutation_seed), mask=mask, base=base, batch_norm=bool(batch_norm))}
    tiles = None
    if coupling_layers:
        if residual:
            raise ValueError("residual=True applies to the autoregressive NSF (MADE), not to coupling_layers=True")
        per_layer = coupling_masks(dim, num_layers, mask)

        def make_layer(m):
            return coupling(dim, spline, m, hidden=hidden, context_dim=context_dim, activation=activation)
    else:
        per_layer = layer_orders(dim, num_layers, permutation, permutation_seed)
        tiles = {"forward_tile": sequential_batch_tile(
            made_config(dim, hidden, spline.num_params, context_dim=context_dim))}

        def make_layer(order):
            return maf_layer(dim, transformer=spline, order=order, hidden=hidden,
                             context_dim=context_dim, residual=residual, activation=activation)

    return _stacked_flow(make_layer, num_layers, per_layer, base, dim=dim, context_dim=context_dim,
                         config=config, batch_norm=batch_norm, tiles=tiles)


FACTORIES: Dict[str, Callable[..., Flow]] = {"maf": maf, "iaf": iaf, "realnvp": realnvp, "nsf": nsf}


def from_config(config: Dict[str, Any]) -> Flow:
    """Rebuild a flow from its ``config`` (``{"factory": name, "kwargs": {...}}``)."""
    try:
        factory = FACTORIES[config["factory"]]
    except (KeyError, TypeError):
        raise ValueError(f"unknown flow config {config!r}; known factories: {sorted(FACTORIES)}") from None
    return factory(**config["kwargs"])
