"""Variational inference: fit a flow ``q`` to an unnormalised density ``p~``.

The flow is fitted by maximising the evidence lower bound

    ELBO(theta) = E_{x ~ q_theta} [ log p~(x) - log q_theta(x) ]  <=  log Z,

with ``Z = integral p~(x) dx``; the gap is ``KL(q_theta || p)``.  The expectation
is estimated with reparameterised samples ``x = f_theta(z)``, ``z ~ p_base``,
taken from ``flow.sample_and_log_prob`` (for an IAF one parallel pass per layer
gives both ``x`` and ``log q(x)``; no sequential inversion).

Two gradient estimators (``estimator=``):

- ``"reparam"``: ``grad mean_s [log p~(x_s) - log q_theta(x_s)]`` where
  ``log q`` comes from the same forward pass, so it depends on theta both through
  ``x_s`` and directly (the score term ``d log q / d theta``, zero in
  expectation but not per sample).
- ``"stl"`` (sticking the landing, Roeder, Wu & Duvenaud 2017): the same
  objective with ``log q`` evaluated at ``stop_gradient(theta)`` on the sampled
  ``x_s`` (which keeps its dependence on theta).  Only the path derivative
  remains; its variance vanishes when ``q == p``.  The density of an arbitrary
  ``x`` is the flow's inverse direction, so for an IAF this costs ``dim``
  sequential passes per layer (cheap for the moderate ``dim`` VI typically has).

Both estimators have the same value (the ELBO estimate), recorded per step.
Quality of a fit: :func:`importance_ess` (effective sample size of the
importance weights ``w = p~(x) / q(x)``) and its ``log_evidence`` estimate.

``log_density`` is a function of ONE event, ``log_density(x: (dim,)) -> ()``
(or ``log_density(x, context)`` for a conditional flow, amortised VI); it is
``vmap``-ed over samples.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._checks import check_context
from .flows import Flow, _map_events

ESTIMATORS = ("reparam", "stl")


def _check_args(flow: Flow, log_density, num_samples: int, estimator: str) -> None:
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be a jaxflows.Flow, got {type(flow).__name__}")
    if not callable(log_density):
        raise TypeError(f"log_density must be a function x -> log p~(x), got {type(log_density).__name__}")
    if not isinstance(num_samples, (int, np.integer)) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")


def _log_target(log_density: Callable, x, context):
    """``log p~`` at every event of ``x: (..., dim)``; shape ``x.shape[:-1]``."""
    if context is None:
        out = _map_events(lambda xi, _: jnp.asarray(log_density(xi)), x, None)
    else:
        out = _map_events(lambda xi, ci: jnp.asarray(log_density(xi, ci)), x, context)
    if out.shape != x.shape[:-1]:
        raise ValueError(
            "log_density must return a scalar for one event x of shape "
            f"({x.shape[-1]},), got shape {tuple(out.shape[x.ndim - 1:])}"
        )
    return out


def log_weights(flow: Flow, params, log_density: Callable, key, num_samples: int, *,
                context=None, estimator: str = "reparam"):
    """Draw ``x_s ~ q`` and return ``(x, log w)`` with ``log w_s = log p~(x_s) - log q(x_s)``.

    Shapes: ``x: (num_samples, [B,] dim)``, ``log w: (num_samples, [B])`` (``B``
    rows of a batched ``context``).  With ``estimator="stl"`` ``log q`` is
    re-evaluated at ``stop_gradient(params)`` (same value, path gradient only).
    """
    _check_args(flow, log_density, num_samples, estimator)
    context = check_context(context, flow.context_dim, batched=True)
    x, log_q = flow.sample_and_log_prob(params, key, (int(num_samples),), context)
    if estimator == "stl":
        log_q = flow.log_prob(jax.lax.stop_gradient(params), x, context)
    return x, _log_target(log_density, x, context) - log_q


def elbo(flow: Flow, params, log_density: Callable, key, num_samples: int = 1000, *,
         context=None, estimator: str = "reparam"):
    """Monte-Carlo ELBO ``mean_s [log p~(x_s) - log q(x_s)]``, ``x_s ~ q`` (a scalar).

    Differentiable in ``params``; ``-elbo`` is the loss :func:`fit_vi` minimises.
    With a batched ``context`` the mean runs over samples and context rows.
    """
    return jnp.mean(log_weights(flow, params, log_density, key, num_samples,
                                context=context, estimator=estimator)[1])


def importance_ess(flow: Flow, params, log_density: Callable, key, num_samples: int = 4096, *,
                   context=None) -> Dict[str, Any]:
    """Effective sample size of the importance weights ``w_s = p~(x_s) / q(x_s)``.

    ``ESS = (sum_s w_s)^2 / sum_s w_s^2``, computed in log space as
    ``exp(2 logsumexp(log w) - logsumexp(2 log w))``; ``1 <= ESS <= n`` and
    ``ESS == n`` iff all weights are equal (``q`` proportional to ``p~`` on the
    samples).  Returns a dict of scalars:

    - ``"ess"``: absolute ESS, ``"ess_fraction"``: ``ESS / n`` in ``(0, 1]``
    - ``"log_evidence"``: ``logsumexp(log w) - log n``, an unbiased-in-``Z``
      estimate of ``log Z`` (a stochastic lower bound on average)
    - ``"elbo"``: ``mean(log w)``

    For a conditional flow pass ONE context ``(context_dim,)``.
    """
    if context is not None and np.ndim(context) != 1:
        raise ValueError(f"importance_ess takes one context of shape ({flow.context_dim},), "
                         f"got shape {tuple(np.shape(context))}")
    _, lw = log_weights(flow, params, log_density, key, num_samples, context=context)
    n = lw.shape[0]
    lse = jax.scipy.special.logsumexp(lw)
    log_ess = 2.0 * lse - jax.scipy.special.logsumexp(2.0 * lw)
    ess = jnp.exp(log_ess)
    return {"ess": ess, "ess_fraction": ess / n, "log_evidence": lse - math.log(n),
            "elbo": jnp.mean(lw)}


def make_vi_step(flow: Flow, log_density: Callable, optimizer: optax.GradientTransformation, *,
                 num_samples: int = 64, estimator: str = "reparam", context=None) -> Callable:
    """One un-jitted VI step ``(params, opt_state, key) -> (params, opt_state, elbo)``:
    ``value_and_grad`` of ``-elbo`` and an optax update.  Jit it, or scan it."""
    _check_args(flow, log_density, num_samples, estimator)

    def loss(params, key):
        return -elbo(flow, params, log_density, key, num_samples, context=context, estimator=estimator)

    def step(params, opt_state, key):
        neg, grads = jax.value_and_grad(loss)(params, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, -neg

    return step


def fit_vi(
    flow: Flow,
    params,
    log_density: Callable,
    *,
    key,
    num_steps: int,
    num_samples: int = 64,
    optimizer: Optional[optax.GradientTransformation] = None,
    estimator: str = "reparam",
    context=None,
    steps_per_sync: int = 250,
) -> Tuple[Any, Dict[str, Any]]:
    """Maximise the ELBO of ``flow`` against ``log_density`` (module docstring).

    Args:
      flow, params: the variational family and its starting parameters.
      log_density: ``log p~(x)`` for one event ``x: (dim,)`` (unnormalised is
        fine); ``log_density(x, context)`` when ``context`` is given.
      key: PRNG key; step ``t`` uses the ``t``-th split, so results do not
        depend on ``steps_per_sync``.
      num_steps: optimisation steps; num_samples: Monte-Carlo samples per step
        (per context row).
      optimizer: an optax transformation, default ``optax.adam(1e-3)``.
      estimator: ``"reparam"`` or ``"stl"`` (sticking the landing).
      context: ``None`` or ``(B, context_dim)`` / ``(context_dim,)`` for a
        conditional flow; the ELBO is averaged over the rows.
      steps_per_sync: steps run inside one jitted ``lax.fori_loop`` between
        host synchronisations (one compilation for all chunks).

    Returns ``(params, history)``: ``history["elbo"]`` the per-step ELBO
    estimates (list of floats), ``history["seconds"]`` the wall time.
    Raises ``FloatingPointError`` naming the first step whose ELBO is not
    finite (for example ``log_density`` returning ``-inf`` or NaN on samples).
    """
    _check_args(flow, log_density, num_samples, estimator)
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
        raise ValueError(f"num_steps must be a non-negative integer, got {num_steps!r}")
    if steps_per_sync < 1:
        raise ValueError(f"steps_per_sync must be >= 1, got {steps_per_sync}")
    context = check_context(context, flow.context_dim, batched=True)
    optimizer = optimizer if optimizer is not None else optax.adam(1e-3)
    step = make_vi_step(flow, log_density, optimizer, num_samples=num_samples,
                        estimator=estimator, context=context)
    chunk = int(min(steps_per_sync, max(num_steps, 1)))

    @jax.jit
    def run(params, opt_state, keys, n):
        def body(i, carry):
            params, opt_state, values = carry
            params, opt_state, value = step(params, opt_state, keys[i])
            return params, opt_state, values.at[i].set(value)

        values = jnp.full((chunk,), jnp.nan, dtype=jnp.result_type(float))
        return jax.lax.fori_loop(0, n, body, (params, opt_state, values))

    t0 = time.perf_counter()
    opt_state = optimizer.init(params)
    step_keys = jax.random.split(key, max(num_steps, 1))
    history: Dict[str, Any] = {"elbo": [], "seconds": 0.0}
    for start in range(0, num_steps, chunk):
        n = min(chunk, num_steps - start)
        keys = step_keys[start:start + chunk]
        if keys.shape[0] < chunk:  # pad the last chunk so every call has one shape
            keys = jnp.concatenate([keys, jnp.broadcast_to(keys[:1], (chunk - keys.shape[0],) + keys.shape[1:])])
        params, opt_state, values = run(params, opt_state, keys, n)
        values = np.asarray(values[:n])  # one host sync per chunk
        bad = ~np.isfinite(values)
        if bad.any():
            first = start + int(np.flatnonzero(bad)[0])
            raise FloatingPointError(
                f"the ELBO became non-finite at step {first} ({values[bad][0]}): check that "
                "log_density is finite wherever the flow puts mass, or lower the learning rate"
            )
        history["elbo"].extend(float(v) for v in values)
    history["seconds"] = time.perf_counter() - t0
    return params, history
