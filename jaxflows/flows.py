"""Flows: a bijector plus a base distribution, as a NamedTuple of pure functions.

``log p(x) = log p_base(z) + log|det dz/dx|`` with ``z, log_det = bijector.inverse(x)``.
Sampling is ``z ~ p_base``, ``x = bijector.forward(z)`` (z -> x); latent
inference is ``x -> z``.  Params: ``{"bijector": ..., "base": ...}``.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
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
from .conditioners import (ConditionerError, as_conditioner, conditioner_config, conditioner_from_config,
                           is_made)
from .distributions import base_from_config, make_base
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
      shape ``sample_shape + (B, dim)``.  Being jit-friendly it does not check
      its output: count non-finite rows with ``(~jnp.isfinite(x)).any(-1).sum()``;
      ``jaxflows sample`` does so and exits with an error, writing nothing, if
      any row is NaN or Inf (unless ``--keep-nonfinite``).
    - ``sample_and_log_prob(params, key, sample_shape=(), context=None)``
      returns ``(x, log_prob(x))`` from the forward pass alone (for an IAF: one
      parallel pass, no sequential inversion).
    - ``to_latent(params, x, context=None) -> z`` (latent inference, x -> z)
    - ``from_latent(params, z, context=None) -> x`` (generation / exact
      reconstruction, z -> x)

    ``config`` is ``{"factory": name, "kwargs": {...}}`` for flows built by a
    factory (every argument, defaults included, so a checkpoint can rebuild
    the flow), else ``None`` (a hand-built ``transformed`` flow, or a base or
    argument with no config form, such as a distrax distribution); a flow from
    :func:`jaxflows.standardize` adds ``"standardize": {"shift": [...],
    "scale": [...]}``, its fixed affine map on the data side.

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
    ``"auto"`` is ``"random"`` above 2 dimensions and ``"reverse"`` otherwise
    (two random orders of 2 variables are often equal); ``"none"`` keeps the
    natural order everywhere.
    """
    natural = np.arange(dim)
    if permutation == "auto":
        permutation = "random" if dim > 2 else "reverse"
    if permutation == "reverse":
        orders = [natural if l % 2 == 0 else natural[::-1] for l in range(num_layers)]
    elif permutation == "random":
        rng = np.random.default_rng(seed)
        orders = [rng.permutation(dim) for _ in range(num_layers)]
    elif permutation == "none":
        orders = [natural] * num_layers
    else:
        raise ValueError(f"permutation must be 'auto', 'reverse', 'random' or 'none', got {permutation!r}")
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


# --------------------------------------------------------------------------
# Configs: every factory records the arguments it was called with
# --------------------------------------------------------------------------

class _NotDescribable(Exception):
    """A factory argument that a JSON config cannot describe (a hand-made base)."""


def _config_value(name: str, value):
    """``value`` (a factory argument) as JSON data the factory accepts back."""
    if name == "conditioner" and value is not None:  # a network: built-in by settings, a user's by name
        return conditioner_config(value)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, Distribution):
        if value.config is None:
            raise _NotDescribable(f"{name} is a hand-made Distribution without a config")
        return json.loads(json.dumps(value.config))
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_config_value(name, v) for v in value]
    raise _NotDescribable(f"{name}={type(value).__name__} has no config form")


def _records_config(name: str):
    """Decorator for a flow factory: the flow it returns carries ``config =
    {"factory": name, "kwargs": every argument, defaults included}``, read off
    the factory's own signature, so a config always holds exactly what the
    factory takes.  An argument with no JSON form (a distrax or hand-made
    base) leaves ``config=None``: such a flow cannot be rebuilt from a file.
    """
    def wrap(factory):
        signature = inspect.signature(factory)

        @functools.wraps(factory)
        def build(*args, **kwargs):
            flow = factory(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            try:
                described = {k: _config_value(k, v) for k, v in bound.arguments.items()}
            except _NotDescribable:
                return flow._replace(config=None)
            return flow._replace(config={"factory": name, "kwargs": described})

        return build

    return wrap


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


def _with_conditioner(kwargs: Dict[str, Any], conditioner) -> Dict[str, Any]:
    """A layer's keyword arguments with ``conditioner`` in place of the built-in
    network's settings (``hidden``, ``activation``, ``residual``), and the
    scan inversion (the cached one is the built-in MADE's) unless it is the
    built-in MADE."""
    kwargs = {k: v for k, v in kwargs.items() if k not in ("hidden", "activation", "residual")}
    if kwargs.get("method") == "cached" and not is_made(conditioner):
        kwargs["method"] = None
    return {**kwargs, "conditioner": conditioner}


def _conditioner(conditioner):
    """A factory's ``conditioner`` argument as a Conditioner, built once for all layers."""
    if conditioner is None:
        return None
    return as_conditioner(conditioner)


def _net_kwargs(hidden, activation, conditioner) -> Dict[str, Any]:
    """A coupling layer's network: the built-in MLP's settings, or the conditioner."""
    if conditioner is None:
        return dict(hidden=hidden, activation=activation)
    return dict(conditioner=conditioner)


def _autoregressive_flow(factory: str, make_layer, dim, num_layers, hidden, context_dim,
                         residual, activation, permutation, permutation_seed, base, min_scale,
                         batch_norm=False, method="cached", conditioner=None, input_bound=None):
    _check_common(dim, num_layers, context_dim, activation)
    hidden = tuple(int(h) for h in hidden)
    orders = layer_orders(dim, num_layers, permutation, permutation_seed)
    kwargs = dict(hidden=hidden, context_dim=context_dim, residual=residual,
                  activation=activation, min_scale=min_scale, method=method)
    if input_bound is not None:
        kwargs["input_bound"] = input_bound
    # the sequential direction (MAF: forward/sampling, IAF: inverse/density) is mapped in
    # cache-sized tiles; the parallel direction is one vmap
    tile = sequential_batch_tile(made_config(dim, hidden, 2, context_dim=context_dim))
    tiles = {"forward_tile": tile} if factory == "maf" else {"inverse_tile": tile}
    if conditioner is not None:
        kwargs = _with_conditioner(kwargs, conditioner)
        if not is_made(conditioner):
            tiles = {}
    return _stacked_flow(lambda order: make_layer(dim, order=order, **kwargs), num_layers, orders,
                         base, dim=dim, context_dim=context_dim, config=None, batch_norm=batch_norm,
                         tiles=tiles)


@_records_config("maf")
def maf(dim: int, *, num_layers: int = 5, hidden: Sequence[int] = (64, 64),
        context_dim: Optional[int] = None, residual: bool = False, activation: str = "relu",
        permutation: str = "auto", permutation_seed: int = 0,
        base: Union[str, Distribution] = "normal", min_scale: float = 1e-2,
        input_bound: Optional[float] = 5.0,
        batch_norm: bool = False, method: str = "cached", conditioner=None) -> Flow:
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

    Defaults, chosen by controlled ablations against flowjax's MAF at equal
    architecture, data and budget (``benchmarks/maf_ablations.py``, and the
    multi-seed report ``benchmarks/realdata.py``):

    - ``permutation="auto"``: a random order per layer above 2 dimensions
      (from ``permutation_seed``), alternating orders otherwise.  Random orders
      fitted markedly better than alternating natural/reversed ones on image
      patches and digits.
    - ``min_scale=1e-2``: the density-side scale is ``sigma >= 0.01``, so one
      layer's sampling step ``x_i = (z_i - mu_i) / sigma_i`` amplifies by at
      most 100.
    - ``input_bound=5.0``: the MADE reads ``5 tanh(x / 5)`` (the identity on
      the bulk of standardised data, see :func:`jaxflows.nn.squash_inputs`),
      so ``mu_i`` and ``sigma_i`` are *bounded* functions of ``x_<i``.  Without
      it a ReLU MADE's ``mu_i`` grows linearly in ``x_<i`` and sampling
      compounds that growth from variable to variable, which produced
      non-finite and astronomically large samples from trained flows; with
      it each layer's samples obey ``|x_i| <= (|z_i| + M) / min_scale`` for a
      constant ``M`` fixed by the params.  The fit was unchanged in the
      ablations.  ``input_bound=None`` removes the clamp.

    ``conditioner``: your own autoregressive network in place of the MADE (a
    :class:`~jaxflows.conditioners.Conditioner` or a ``flax.linen`` module
    built from :class:`jaxflows.nn.MaskedDense`; see ``docs/conditioners.md``).
    ``hidden``, ``activation`` and ``residual`` then go unused, the network
    is checked autoregressive when the flow is built, and ``sample`` inverts
    it with the ``"scan"`` reference (the cached inversion is MADE-only).
    The config records the network; :func:`jaxflows.load` rebuilds such a
    flow when given the same network (``load(path, conditioner=...)``).
    """
    return _autoregressive_flow("maf", maf_layer, dim, num_layers, hidden, context_dim, residual,
                                activation, permutation, permutation_seed, base, min_scale,
                                batch_norm, method, _conditioner(conditioner), input_bound)


@_records_config("iaf")
def iaf(dim: int, *, num_layers: int = 5, hidden: Sequence[int] = (64, 64),
        context_dim: Optional[int] = None, residual: bool = False, activation: str = "relu",
        permutation: str = "reverse", permutation_seed: int = 0,
        base: Union[str, Distribution] = "normal", min_scale: float = 1e-3,
        batch_norm: bool = False, method: str = "cached", conditioner=None) -> Flow:
    """Inverse autoregressive flow (Kingma et al. 2016).

    Each layer is ``x_i = mu_i(z_<i) + sigma_i(z_<i) * z_i``: ``sample`` and
    ``sample_and_log_prob`` are one parallel pass per layer (IAF's home is
    variational inference, scoring its own samples), while ``log_prob`` of an
    arbitrary ``x`` is sequential (``method`` and ``conditioner`` as in
    :func:`maf`).
    """
    return _autoregressive_flow("iaf", iaf_layer, dim, num_layers, hidden, context_dim, residual,
                                activation, permutation, permutation_seed, base, min_scale,
                                batch_norm, method, _conditioner(conditioner))


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


@_records_config("realnvp")
def realnvp(dim: int, *, num_layers: int = 5, hidden: Sequence[int] = (64, 64),
            context_dim: Optional[int] = None, activation: str = "relu", mask: str = "alternate",
            base: Union[str, Distribution] = "normal", min_scale: float = 1e-3,
            batch_norm: bool = False, conditioner=None) -> Flow:
    """RealNVP (Dinh et al. 2017): ``num_layers`` affine coupling layers.

    Layer ``l`` keeps the coordinates of ``coupling_masks(dim, num_layers,
    mask)[l]`` and maps the others by ``x_i = mu_i + sigma_i * z_i`` with
    ``(mu, log sigma)`` from an MLP of the kept ones (and the context):
    ``log_prob`` and ``sample`` are both one parallel pass per layer.  Layers
    are stacked under ``lax.scan`` (the masks are scanned, never params).
    ``base`` and ``batch_norm`` as in :func:`maf`.  ``conditioner``: any
    network in place of the MLP (a :class:`~jaxflows.conditioners.Conditioner`
    or a ``flax.linen`` module, see :func:`jaxflows.nn.from_linen`); ``hidden``
    and ``activation`` then go unused; recorded in the config as in :func:`maf`.
    """
    _check_common(dim, num_layers, context_dim, activation)
    hidden = tuple(int(h) for h in hidden)
    masks = coupling_masks(dim, num_layers, mask)
    net = _net_kwargs(hidden, activation, _conditioner(conditioner))

    def make_layer(m):
        return affine_coupling(dim, m, min_scale=min_scale, context_dim=context_dim, **net)

    return _stacked_flow(make_layer, num_layers, masks, base, dim=dim, context_dim=context_dim,
                         config=None, batch_norm=batch_norm)


@_records_config("nsf")
def nsf(dim: int, *, num_layers: int = 5, hidden: Sequence[int] = (64, 64), num_bins: int = 8,
        bound: float = 3.0, context_dim: Optional[int] = None, coupling_layers: bool = False,
        residual: bool = False, activation: str = "relu", permutation: str = "reverse",
        permutation_seed: int = 0, mask: str = "alternate",
        base: Union[str, Distribution] = "normal", batch_norm: bool = False, conditioner=None) -> Flow:
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

    ``base`` and ``batch_norm`` as in :func:`maf`; ``conditioner`` as in
    :func:`maf` (autoregressive) or :func:`realnvp` (``coupling_layers=True``).
    """
    _check_common(dim, num_layers, context_dim, activation)
    hidden = tuple(int(h) for h in hidden)
    spline = rational_quadratic_spline(int(num_bins), float(bound))
    conditioner = _conditioner(conditioner)
    tiles = None
    if coupling_layers:
        if residual:
            raise ValueError("residual=True applies to the autoregressive NSF (MADE), not to coupling_layers=True")
        per_layer = coupling_masks(dim, num_layers, mask)

        net = _net_kwargs(hidden, activation, conditioner)

        def make_layer(m):
            return coupling(dim, spline, m, context_dim=context_dim, **net)
    else:
        per_layer = layer_orders(dim, num_layers, permutation, permutation_seed)
        tiles = {"forward_tile": sequential_batch_tile(
            made_config(dim, hidden, spline.num_params, context_dim=context_dim))}

        net = dict(hidden=hidden, residual=residual, activation=activation)
        if conditioner is not None:
            net = _with_conditioner(net, conditioner)
            if not is_made(conditioner):
                tiles = None

        def make_layer(order):
            return maf_layer(dim, transformer=spline, order=order, context_dim=context_dim, **net)

    return _stacked_flow(make_layer, num_layers, per_layer, base, dim=dim, context_dim=context_dim,
                         config=None, batch_norm=batch_norm, tiles=tiles)


FACTORIES: Dict[str, Callable[..., Flow]] = {"maf": maf, "iaf": iaf, "realnvp": realnvp, "nsf": nsf}


# Bounds on what a config may ask for, checked before anything is built: a
# config read from a file must not make from_config allocate without limit.
MAX_DIM = 1_000_000
MAX_LAYERS = 10_000
MAX_WIDTH = 1_000_000
MAX_HIDDEN_LAYERS = 64
MAX_BINS = 10_000
MAX_PARAMS = 2 ** 32
# Top-level keys a flow config may hold.
CONFIG_KEYS = ("factory", "kwargs", "standardize")  # "standardize": see jaxflows.standardizing
_INT_BOUNDS = {"dim": (1, MAX_DIM), "num_layers": (1, MAX_LAYERS), "context_dim": (1, MAX_DIM),
               "num_bins": (1, MAX_BINS), "permutation_seed": (0, 2 ** 63 - 1)}


def _depth(obj, limit: int) -> bool:
    """Whether ``obj`` (JSON data) nests deeper than ``limit``; iterative, no recursion."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > limit:
            return True
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
    return False


def _min_num_params(kw: Dict[str, Any]) -> int:
    """A lower bound on the parameter count of the flow ``kw`` describes: every
    factory's layer is an MLP (or MADE) reading ``dim`` inputs through ``hidden``."""
    dim, layers = kw.get("dim", 1), kw.get("num_layers", 5)
    net = kw.get("conditioner")
    if isinstance(net, dict) and net.get("type") not in ("mlp", "made"):
        return layers  # a user network: its size is not in the config
    hidden = net.get("hidden", [64, 64]) if isinstance(net, dict) else kw.get("hidden", [64, 64])
    widths = [dim] + list(hidden) + [1]
    return layers * max(dim, sum(a * b for a, b in zip(widths[:-1], widths[1:])))


def check_config(config, *, max_params: Optional[int] = None) -> None:
    """Validate a flow config without building anything (see :func:`from_config`).

    Raises ``ValueError`` naming the field: not a ``{"factory", "kwargs"}``
    dict, an unknown factory or argument, a field of the wrong type or out of
    range (``dim`` up to ``MAX_DIM``, ``num_layers`` up to ``MAX_LAYERS``,
    hidden widths up to ``MAX_WIDTH``, ...), nesting deeper than any config,
    or a flow of more than ``max_params`` parameters (default ``MAX_PARAMS``).
    """
    if not isinstance(config, dict) or "factory" not in config or "kwargs" not in config:
        raise ValueError(f"a flow config must be a dict {{'factory': ..., 'kwargs': {{...}}}}, "
                         f"got {config!r:.200}")
    unknown = sorted(str(k) for k in config if k not in CONFIG_KEYS)
    if unknown:
        raise ValueError(f"flow config has unknown key(s) {unknown}; it may need a newer jaxflows")
    if _depth(config, 32):
        raise ValueError("flow config is nested deeper than any flow config")
    name, kw = config["factory"], config["kwargs"]
    if not isinstance(name, str) or name not in FACTORIES:
        raise ValueError(f"unknown flow factory {name!r:.100}; known factories: {sorted(FACTORIES)}")
    if not isinstance(kw, dict):
        raise ValueError(f"flow config kwargs must be a dict, got {type(kw).__name__}")
    accepted = inspect.signature(FACTORIES[name]).parameters
    unknown = sorted(str(k) for k in kw if k not in accepted)
    if unknown:
        raise ValueError(f"{name} takes no argument(s) {unknown}; the config may need a newer jaxflows")
    for key, value in kw.items():
        if key in _INT_BOUNDS:
            lo, hi = _INT_BOUNDS[key]
            if value is None and key == "context_dim":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ValueError(f"flow config {key}={value!r:.60} is not an integer in [{lo}, {hi}]")
        elif key == "hidden":
            if not isinstance(value, list) or len(value) > MAX_HIDDEN_LAYERS or not all(
                    isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= MAX_WIDTH
                    for h in value):
                raise ValueError(f"flow config hidden={value!r:.60} is not a list of at most "
                                 f"{MAX_HIDDEN_LAYERS} integers in [1, {MAX_WIDTH}]")
        elif key == "conditioner":
            if value is not None and not (isinstance(value, dict) and isinstance(value.get("type"), str)):
                raise ValueError(f"flow config conditioner must be a network description, got {value!r:.60}")
        elif key == "base":
            if not isinstance(value, (str, dict)):
                raise ValueError(f"flow config base must be a name or a base config, got {value!r:.60}")
        elif not (value is None or isinstance(value, (bool, int, float))
                  or (isinstance(value, str) and len(value) <= 256)):
            raise ValueError(f"flow config {key}={value!r:.60} is not a number, a flag or a name")
    if "standardize" in config:
        from .standardizing import check_standardize_config  # local: it imports this module
        check_standardize_config(config["standardize"], kw.get("dim"))
    limit = MAX_PARAMS if max_params is None else max_params
    need = _min_num_params(kw)
    if need > limit:
        raise ValueError(f"flow config describes a flow of at least {need} parameters, more than "
                         f"the {limit} allowed here")


# arguments added to a factory after configs were first saved -> value that reproduces old files
_LEGACY_DEFAULTS = {"maf": {"input_bound": None}}


def from_config(config: Dict[str, Any], *, max_params: Optional[int] = None, conditioner=None) -> Flow:
    """Rebuild a flow from its ``config`` (``{"factory": name, "kwargs": {...}}``,
    as recorded in ``Flow.config`` by every factory).

    The config is checked field by field first (:func:`check_config`), so a
    damaged or hostile config gives a ``ValueError`` naming the field before
    anything is allocated; ``max_params`` caps the size of the flow it may
    describe (``checkpoint.load`` passes what the file can hold).

    A flow built with your own network (``conditioner=``) records the network's
    class in its config, not its code: pass the same network again as
    ``conditioner`` (a ``ValueError`` says so when it is missing or of another
    class).  The built-in networks are rebuilt from the config alone.
    """
    check_config(config, max_params=max_params)
    # a config records every argument, so a missing one means the config was written
    # before the factory had it: rebuild with that argument's behaviour of the time
    kwargs = {**_LEGACY_DEFAULTS.get(config["factory"], {}), **config["kwargs"]}
    if isinstance(kwargs.get("base"), dict):
        kwargs["base"] = base_from_config(kwargs["base"], kwargs.get("dim", 0))
    if kwargs.get("conditioner") is not None:
        kwargs["conditioner"] = conditioner_from_config(kwargs["conditioner"], conditioner)
    elif conditioner is not None:
        raise ConditionerError("conditioner= was given, but this flow config records no conditioner: "
                         "it was built with the built-in network")
    flow = FACTORIES[config["factory"]](**kwargs)
    if config.get("standardize") is not None:  # the fixed affine map of jaxflows.standardize
        from .standardizing import standardize  # local: it imports this module
        flow = standardize(flow, shift=config["standardize"]["shift"],
                           scale=config["standardize"]["scale"])
    return flow
