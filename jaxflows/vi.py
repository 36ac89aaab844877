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
from .batching import map_events
from .flows import Flow
from .sharding import host_tree
from .steps import DEFAULT_OPTIMIZER, TrainingDiverged, guarded_step, init_optimizer, tally, zero_stats

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
        out = map_events(lambda xi, _: jnp.asarray(log_density(xi)), x, None)
    else:
        out = map_events(lambda xi, ci: jnp.asarray(log_density(xi, ci)), x, context)
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
    """One jitted VI step ``(params, opt_state, key) -> (params, opt_state, elbo)``:
    ``value_and_grad`` of ``-elbo`` and an optax update, with ``opt_state =
    jaxflows.train.init_optimizer(optimizer, params)`` (``optimizer.init(params)``
    for a flow without batch-norm statistics).

    The same guarded step :func:`jaxflows.make_step` runs for maximum likelihood:
    if the ELBO, a gradient or an updated parameter is NaN/Inf, the incoming
    ``params`` and ``opt_state`` come back unchanged and the returned ELBO is
    non-finite (the step was skipped)."""
    _check_args(flow, log_density, num_samples, estimator)

    def loss(params, key):
        return -elbo(flow, params, log_density, key, num_samples, context=context, estimator=estimator)

    core = guarded_step(loss, optimizer)

    @jax.jit
    def step(params, opt_state, key):
        params, opt_state, neg = core(params, opt_state, key)
        return params, opt_state, -neg

    return step


def _chunk_runner(step: Callable, chunk: int, max_bad_steps: int) -> Callable:
    """Jitted ``run(params, opt_state, stats, keys, n)``: ``n <= chunk`` steps in one
    ``lax.fori_loop``, counting skipped steps on the device, and their ELBOs."""

    @jax.jit
    def run(params, opt_state, stats, keys, n):
        def body(i, carry):
            params, opt_state, stats, values = carry
            params, opt_state, value = step(params, opt_state, keys[i])
            return params, opt_state, tally(stats, -value, max_bad_steps), values.at[i].set(value)

        values = jnp.full((chunk,), jnp.nan, dtype=jnp.result_type(float))
        return jax.lax.fori_loop(0, n, body, (params, opt_state, stats, values))

    return run


def _chunk_keys(step_keys, start: int, chunk: int):
    """Keys of steps ``start .. start + chunk``, the last chunk padded to one shape."""
    keys = step_keys[start:start + chunk]
    if keys.shape[0] < chunk:
        pad = jnp.broadcast_to(keys[:1], (chunk - keys.shape[0],) + keys.shape[1:])
        keys = jnp.concatenate([keys, pad])
    return keys


def _check_divergence(stats, limit: int, params, history) -> None:
    """Raise :class:`TrainingDiverged` once ``limit`` steps in a row were skipped."""
    bad = int(stats.max_bad_run)
    if bad < limit:
        return
    at = int(stats.tripped_at)
    raise TrainingDiverged(
        f"fit_vi stopped at step {at}: the ELBO or its gradient was non-finite at {limit} steps "
        f"in a row (steps {at - limit + 1} to {at}), each skipped. Check that log_density is "
        "finite wherever the flow puts mass, or lower the learning rate",
        params=params, history=history, step=at, bad_steps=bad)


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
    max_bad_steps: int = 50,
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
      max_bad_steps: as in :func:`jaxflows.fit`, a step whose ELBO, gradient or
        updated params are NaN/Inf is skipped; this many in a row raise.

    Returns ``(params, history)``: ``history["elbo"]`` the per-step ELBO
    estimates (list of floats; non-finite for a skipped step),
    ``history["skipped_steps"]`` how many steps were skipped, and
    ``history["seconds"]`` the wall time.
    Raises :class:`jaxflows.TrainingDiverged` (a ``FloatingPointError``) naming
    the step once ``max_bad_steps`` consecutive steps were skipped (for example
    ``log_density`` returning ``-inf`` or NaN on samples); it carries the last
    finite ``params``, the ``history`` so far, ``step`` and ``bad_steps``.
    """
    _check_args(flow, log_density, num_samples, estimator)
    _check_counts(num_steps=num_steps, steps_per_sync=steps_per_sync, max_bad_steps=max_bad_steps)
    context = check_context(context, flow.context_dim, batched=True)
    optimizer = DEFAULT_OPTIMIZER if optimizer is None else optimizer
    step = make_vi_step(flow, log_density, optimizer, num_samples=num_samples,
                        estimator=estimator, context=context)
    chunk = int(min(steps_per_sync, max(num_steps, 1)))
    return _run_chunks(_chunk_runner(step, chunk, int(max_bad_steps)), params,
                       init_optimizer(optimizer, params), key, int(num_steps), chunk,
                       int(max_bad_steps))


def _check_counts(**counts) -> None:
    for name, value in counts.items():
        least = 0 if name == "num_steps" else 1
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


def _run_chunks(run: Callable, params, opt_state, key, num_steps: int, chunk: int,
                max_bad_steps: int) -> Tuple[Any, Dict[str, Any]]:
    """``num_steps`` steps in chunks of ``chunk``, one host sync per chunk."""
    t0 = time.perf_counter()
    stats = zero_stats()
    step_keys = jax.random.split(key, max(num_steps, 1))
    history: Dict[str, Any] = {"elbo": [], "skipped_steps": 0, "seconds": 0.0}
    for start in range(0, num_steps, chunk):
        n = min(chunk, num_steps - start)
        params, opt_state, stats, values = run(params, opt_state, stats,
                                               _chunk_keys(step_keys, start, chunk), n)
        history["elbo"].extend(float(v) for v in np.asarray(values[:n]))
        stats_now = host_tree(stats)
        history["skipped_steps"] = int(stats_now.steps) - int(stats_now.ok_steps)
        history["seconds"] = time.perf_counter() - t0
        _check_divergence(stats_now, max_bad_steps, params, history)
    history["seconds"] = time.perf_counter() - t0
    return params, history
