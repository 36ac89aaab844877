"""Maximum-likelihood training with optax: ``make_step`` and ``fit``."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .flows import Flow


def nll_loss(flow: Flow) -> Callable:
    """``loss(params, x, context) = -mean(log p(x | context))`` in nats."""

    def loss(params, x, context=None):
        return -jnp.mean(flow.log_prob(params, x, context))

    return loss


def make_step(flow: Flow, optimizer: optax.GradientTransformation) -> Callable:
    """One jitted optimisation step ``(params, opt_state, x, context) ->
    (params, opt_state, loss)``: ``value_and_grad`` of the NLL and an optax update."""
    loss_fn = nll_loss(flow)

    @jax.jit
    def step(params, opt_state, x, context=None):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, context)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def _host_array(a, name: str, dim: Optional[int]) -> np.ndarray:
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {a.dtype}")
    if a.ndim != 2 or (dim is not None and a.shape[1] != dim):
        want = f"(n, {dim})" if dim is not None else "(n, d)"
        raise ValueError(f"{name} must have shape {want}, got shape {a.shape}")
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{name} has {rows.size} row(s) with NaN or Inf values (first at row {rows[0]}); "
            "remove or impute them before training"
        )
    return a


def fit(
    flow: Flow,
    params,
    data,
    *,
    key,
    optimizer: Optional[optax.GradientTransformation] = None,
    batch_size: int = 256,
    num_epochs: int = 50,
    context=None,
) -> Tuple[Any, Dict[str, list]]:
    """Fit ``params`` to ``data: (n, dim)`` by maximum likelihood.

    Shuffles (deterministically from ``key``) into minibatches of
    ``batch_size`` each epoch (the last, smaller batch is dropped when the data
    does not divide evenly, so every step has one shape and compiles once).
    ``optimizer`` defaults to ``optax.adam(1e-3)``.  Returns
    ``(params, history)`` with ``history["train_loss"]`` the mean NLL (nats)
    per epoch and ``history["epoch_seconds"]``.
    """
    data = _host_array(data, "data", flow.dim)
    if context is not None:
        context = _host_array(context, "context", flow.context_dim)
        if context.shape[0] != data.shape[0]:
            raise ValueError(f"context has {context.shape[0]} rows but data has {data.shape[0]}")
    elif flow.context_dim is not None:
        raise ValueError(f"this flow is conditional (context_dim={flow.context_dim}): pass context=")
    n = data.shape[0]
    batch_size = min(int(batch_size), n)
    if batch_size < 1:
        raise ValueError("data is empty")
    optimizer = optimizer if optimizer is not None else optax.adam(1e-3)
    step = make_step(flow, optimizer)
    opt_state = optimizer.init(params)
    history: Dict[str, list] = {"train_loss": [], "epoch_seconds": []}
    steps_per_epoch = n // batch_size
    for epoch in range(num_epochs):
        t0 = time.perf_counter()
        key, sub = jax.random.split(key)
        perm = np.asarray(jax.random.permutation(sub, n))
        total = jnp.zeros(())
        for s in range(steps_per_epoch):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            ctx = None if context is None else context[idx]
            params, opt_state, loss = step(params, opt_state, data[idx], ctx)
            total = total + loss
        history["train_loss"].append(float(total) / steps_per_epoch)  # one host sync per epoch
        history["epoch_seconds"].append(time.perf_counter() - t0)
    return params, history
