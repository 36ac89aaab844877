"""Flows: a bijector plus a base distribution, as a NamedTuple of pure functions.

``log p(x) = log p_base(z) + log|det dz/dx|`` with ``z, log_det = bijector.inverse(x)``.
Sampling is ``z ~ p_base``, ``x = bijector.forward(z)`` (z -> x); latent
inference is ``x -> z``.  Params: ``{"bijector": ..., "base": ...}``.

This module holds the generic :class:`Flow` and :func:`transformed`, which
builds one from any bijector and base.  The ready-made flows (``maf``,
``iaf``, ``realnvp``, ``nsf``), their configs and ``from_config`` live in
:mod:`jaxflows.models`; ``from jaxflows.flows import maf`` (and the other
names that moved there) keeps working.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, NamedTuple, Optional, Union

import jax

from ._checks import check_batch, check_context
from ._types import Bijector, Distribution
from .batching import map_events, static_shape
from .distributions import make_base

__all__ = ["Flow", "transformed"]


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


def _latent_map(apply, dim: int, context_dim: Optional[int], name: str, tile: Optional[int]):
    """One direction of the bijector over a batch, without its log-det:
    ``to_latent`` (``apply`` = inverse, x -> z) or ``from_latent`` (forward, z -> x)."""

    def run(params, value, context=None):
        value = check_batch(value, dim, name)
        context = check_context(context, context_dim, batched=True)
        return map_events(lambda vi, ci: apply(params["bijector"], vi, ci)[0], value, context, tile)

    return run


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

        return map_events(one, x, context, inverse_tile)

    def sample_and_log_prob(params, key, sample_shape=(), context=None):
        context = check_context(context, context_dim, batched=True)
        sample_shape = static_shape(sample_shape)
        ctx_batch = () if context is None else context.shape[:-1]
        z = base.sample(params["base"], key, tuple(sample_shape) + ctx_batch)

        def one(zi, ci):
            x, ld = bijector.forward(params["bijector"], zi, ci)
            return x, base.log_prob(params["base"], zi) - ld

        return map_events(one, z, context, forward_tile)

    def sample(params, key, sample_shape=(), context=None):
        return sample_and_log_prob(params, key, sample_shape, context)[0]

    to_latent = _latent_map(bijector.inverse, dim, context_dim, "x", inverse_tile)
    from_latent = _latent_map(bijector.forward, dim, context_dim, "z", forward_tile)
    return Flow(init, log_prob, sample, sample_and_log_prob, to_latent, from_latent,
                dim, context_dim, bijector, base, config)


# The model zoo moved to jaxflows.models; these names stay importable from here.
_MOVED_TO_MODELS = frozenset({
    "FACTORIES", "maf", "iaf", "realnvp", "nsf", "layer_orders", "coupling_masks", "from_config",
    "check_config", "CONFIG_KEYS", "MAX_DIM", "MAX_LAYERS", "MAX_WIDTH", "MAX_HIDDEN_LAYERS",
    "MAX_BINS", "MAX_PARAMS"})


def __getattr__(name: str):
    """``jaxflows.flows.maf`` and the other model-zoo names, read from :mod:`jaxflows.models`
    on first use (importing it here would make the two modules import each other)."""
    if name in _MOVED_TO_MODELS:
        return getattr(importlib.import_module("jaxflows.models"), name)
    raise AttributeError(f"module 'jaxflows.flows' has no attribute {name!r}")
