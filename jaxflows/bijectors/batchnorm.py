"""Batch normalisation as a bijector (Dinh et al. 2017; between MADE layers in MAF).

Map, in the density direction (data -> base, the bijector's ``inverse``)::

    z = (x - m) / sqrt(v) * exp(log_scale) + shift
    log_det_inv = sum(log_scale - 0.5 log v),   log_det_fwd = -log_det_inv
    forward (z -> x):  x = m + (z - shift) * exp(-log_scale) * sqrt(v)

with ``v`` floored at ``eps``.  ``(m, v)`` are the batch mean and (biased)
variance in **training mode** and the running averages in **evaluation mode**.

Design: why two functions and a state split
-------------------------------------------
A ``Bijector`` sees ONE event, but training mode needs statistics of the whole
batch, and the running averages are *state*: they change every training step
but must never be moved by the optimiser.  So:

1. **Eval mode is an ordinary Bijector.**  :func:`batch_norm` returns
   ``Bijector(init, forward, inverse)`` whose params are
   ``{"log_scale", "shift", "running_mean", "running_var"}``; the running
   statistics are read through ``stop_gradient`` (their gradient is exactly
   zero) and every other part of the package (``chain``, ``stack``, flows,
   ``log_prob``, ``sample``, checkpoints) treats it like any other layer.
2. **The state is kept apart from what the optimiser sees.**
   :func:`split_state` (from :mod:`jaxflows.state`, re-exported here)
   partitions any params pytree into ``(trainable, state)`` -- ``state``
   holds exactly the leaves named in :data:`STATE_KEYS`, ``None`` elsewhere;
   ``trainable`` the rest, ``None`` at the state leaves -- and
   :func:`merge_state` puts them back together.  The optimiser is built and
   stepped on ``trainable`` only (optax ignores ``None`` subtrees).
3. **Training mode is a batch-level pure function** that returns the new
   state instead of mutating anything:
   :func:`batch_norm_train` ``(params, x_batch) -> (z_batch, log_det_inv (B,),
   new_params)`` normalises with batch statistics (gradients flow through
   them, as in the MAF paper) and returns params whose running statistics are
   ``momentum * running + (1 - momentum) * batch``.
   :func:`stack_with_batch_norm` lifts it to ``n`` stacked ``(layer, batch
   norm)`` blocks: it returns the eval-mode stacked Bijector and
   ``train_inverse(params, x_batch, context_batch) -> (z, log_det (B,),
   new_params)``, a ``lax.scan`` over blocks at batch level (each layer
   vmapped over the batch, then batch-normalised).  Flows built with
   ``batch_norm=True`` expose it as ``flow.train_log_prob(params, x, context)
   -> (log_prob (B,), new_params)``.

A training step is then (``jaxflows.fit`` does this for flows whose
``train_log_prob`` is not ``None``)::

    trainable, state = split_state(params)
    def loss(trainable, state, x, c):
        lp, new_params = flow.train_log_prob(merge_state(trainable, state), x, c)
        return -lp.mean(), split_state(new_params)[1]
    (l, state), g = jax.value_and_grad(loss, has_aux=True)(trainable, state, x, c)
    updates, opt_state = optimizer.update(g, opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    ...
    params = merge_state(trainable, state)   # evaluation: flow.log_prob(params, x)

At init ``log_scale = shift = running_mean = 0`` and ``running_var = 1``: the
eval-mode layer is exactly the identity.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_batch, check_dim, checked_bijector
from .._types import Bijector
from ..state import STATE_KEYS, has_state, merge_state, split_state  # noqa: F401 - re-exported
from .combinators import chain, layers, stack


def _check_config(dim, eps, momentum):
    check_dim(dim)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")


def _normalise(params, x, mean, var, eps):
    """The density-direction map on any ``(..., dim)``; returns ``(z, log_det)``."""
    dt = x.dtype
    log_scale = params["log_scale"].astype(dt)
    var = jnp.maximum(var.astype(dt), eps)
    z = (x - mean.astype(dt)) * jax.lax.rsqrt(var) * jnp.exp(log_scale) + params["shift"].astype(dt)
    return z, jnp.sum(log_scale - 0.5 * jnp.log(var), axis=-1)


def batch_norm(dim: int, *, eps: float = 1e-5) -> Bijector:
    """Eval-mode batch normalisation (module docstring): uses the running statistics.

    Params ``{"log_scale": (dim,), "shift": (dim,), "running_mean": (dim,),
    "running_var": (dim,)}``; the last two are state (see :func:`split_state`)
    and receive zero gradient.  Takes no context.
    """
    _check_config(dim, eps, 0.0)

    def init(key):
        del key
        return {"log_scale": jnp.zeros((dim,)), "shift": jnp.zeros((dim,)),
                "running_mean": jnp.zeros((dim,)), "running_var": jnp.ones((dim,))}

    def _stats(params):
        return (jax.lax.stop_gradient(params["running_mean"]),
                jax.lax.stop_gradient(params["running_var"]))

    def inverse(params, x, context):
        return _normalise(params, x, *_stats(params), eps)

    def forward(params, z, context):
        mean, var = _stats(params)
        dt = z.dtype
        log_scale = params["log_scale"].astype(dt)
        var = jnp.maximum(var.astype(dt), eps)
        x = (z - params["shift"].astype(dt)) * jnp.exp(-log_scale) * jnp.sqrt(var) + mean.astype(dt)
        return x, -jnp.sum(log_scale - 0.5 * jnp.log(var))

    return checked_bijector("batch_norm", dim, init, forward, inverse)


def batch_norm_train(params, x, *, momentum: float = 0.9, eps: float = 1e-5):
    """Training-mode batch norm on a batch ``x: (B, dim)`` (density direction).

    Returns ``(z: (B, dim), log_det_inv: (B,), new_params)``: ``z`` normalised
    with the batch mean and biased variance (differentiable), ``new_params``
    equal to ``params`` except ``running_* <- momentum * running_* +
    (1 - momentum) * batch_*`` (gradient stopped).
    """
    dim = params["shift"].shape[0]
    _check_config(dim, eps, momentum)
    x = check_batch(x, dim, "x")
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"batch_norm_train needs a batch of shape (B >= 2, {dim}), got {tuple(x.shape)}")
    mean = jnp.mean(x, axis=0)
    var = jnp.mean((x - mean) ** 2, axis=0)
    z, log_det = _normalise(params, x, mean, var, eps)
    new = dict(params)
    for name, batch in (("running_mean", mean), ("running_var", var)):
        old = params[name]
        new[name] = jax.lax.stop_gradient(momentum * old + (1.0 - momentum) * batch.astype(old.dtype))
    return z, log_det, new


def _drop_context(b: Bijector) -> Bijector:
    """``b`` inside a conditional chain: the context goes to the other layers."""
    return Bijector(b.init, lambda p, x, context=None: b.forward(p, x),
                    lambda p, y, context=None: b.inverse(p, y))


def stack_with_batch_norm(
    layer,
    n: int,
    dim: int,
    *,
    per_layer: Optional[np.ndarray] = None,
    eps: float = 1e-5,
    momentum: float = 0.9,
):
    """``n`` blocks ``chain(batch_norm, layer)`` under ``lax.scan``, plus their training pass.

    In the density direction each block applies ``layer.inverse`` and then
    batch norm, so every layer's output is normalised (the MAF paper's
    placement).  ``layer``/``per_layer`` are as in
    :func:`~jaxflows.bijectors.stack`; the context goes to the layers (batch
    norm takes none).

    Returns ``(bijector, train_inverse)``: ``bijector`` is the eval-mode stack
    (params ``(bn_params, layer_params)``, each with a leading axis ``n``);
    ``train_inverse(params, x: (B, dim), context: (B, C) or None) ->
    (z: (B, dim), log_det_inv: (B,), new_params)`` runs the blocks at batch
    level with training-mode batch norm (see the module docstring).
    """
    _check_config(dim, eps, momentum)
    bn = _drop_context(batch_norm(dim, eps=eps))
    inner = layers(layer, n, per_layer=per_layer, who="stack_with_batch_norm")
    bijector = stack(lambda d: chain(bn, inner.make(d)), n, per_layer=inner.per_layer)

    def train_inverse(params, x, context=None):
        def body(carry, lay, p):
            h, total = carry
            bp, lp = p
            if context is None:
                h, ld_layer = jax.vmap(lambda hi: lay.inverse(lp, hi, None))(h)
            else:
                h, ld_layer = jax.vmap(lambda hi, ci: lay.inverse(lp, hi, ci))(h, context)
            h, ld_bn, new_bp = batch_norm_train(bp, h, momentum=momentum, eps=eps)
            return (h, total + ld_layer + ld_bn), new_bp

        (z, total), new_bn = inner.scan(body, (x, jnp.zeros(x.shape[:1], x.dtype)), params, reverse=True)
        return z, total, (new_bn, params[1])

    return bijector, train_inverse
