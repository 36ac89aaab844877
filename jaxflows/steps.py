"""The guarded optimisation step shared by :func:`jaxflows.fit` and :func:`jaxflows.fit_vi`.

One step is ``value_and_grad`` of a scalar objective followed by an optax
update, guarded: if the loss, a gradient or an updated parameter is NaN/Inf the
step returns the incoming params and optimizer state bit for bit (a
``jnp.where`` select, no host sync) and reports a non-finite loss, so the step
is *skipped* and can be counted. Both training loops follow one policy: keep
training through skipped steps, and raise :class:`TrainingDiverged` once
``max_bad_steps`` steps in a row were skipped.

The optimizer sees only the trainable part of ``params``
(:func:`jaxflows.split_state`); state leaves such as batch-norm running
statistics are replaced by what the objective returns beside the loss.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from .state import merge_state, split_state
from .flows import Flow

# What fit and fit_vi use when no optimizer= is given (one object: its compiled steps are reused).
DEFAULT_OPTIMIZER = optax.adam(1e-3)
DEFAULT_LEARNING_RATE = 1e-3


class FitWarning(UserWarning):
    """Something :func:`jaxflows.fit` did that is worth knowing but not an error (a resumed
    run that had already finished; a few non-finite samples from the fitted flow)."""


class TrainingDiverged(FloatingPointError):
    """Training broke down; the exception keeps what was learnt before it did.

    Raised by :func:`jaxflows.fit` and :func:`jaxflows.fit_vi` when
    ``max_bad_steps`` consecutive steps had a NaN/Inf loss, gradient or
    updated parameter (each one skipped), and by ``fit`` when the fitted flow
    draws non-finite samples although its loss stayed finite.

    Attributes:
      params: the best params so far: ``fit``'s best epoch by validation loss
        (else its last finite params), ``fit_vi``'s last finite params.
      history: the history up to the failure, as the call would have returned it.
      epoch: the 0-based epoch ``fit`` stopped at (``None`` for ``fit_vi``).
      step: the 0-based step, counted over the whole run, at which the run of
        skipped steps reached ``max_bad_steps`` (``None`` for the sample check).
      bad_steps: the longest run of consecutive skipped steps (0 for the sample check).
    """

    def __init__(self, message: str, *, params: Any = None, history: Optional[dict] = None,
                 epoch: Optional[int] = None, step: Optional[int] = None, bad_steps: int = 0):
        super().__init__(message)
        self.params = params
        self.history = history
        self.epoch = epoch
        self.step = step
        self.bad_steps = bad_steps

    def with_advice(self, advice: str) -> "TrainingDiverged":
        """The same failure, its message extended by ``advice`` (e.g. a front end's own flags)."""
        return TrainingDiverged(f"{self} {advice}", params=self.params, history=self.history,
                                epoch=self.epoch, step=self.step, bad_steps=self.bad_steps)


def nll_loss(flow: Flow) -> Callable:
    """``loss(params, x, context) = -mean(log p(x | context))`` in nats.

    For a flow with batch-norm layers (``flow.train_log_prob`` set) the loss
    uses the training-mode density (batch statistics) and returns
    ``(loss, new_state)``: the updated running statistics, which the step
    stores instead of letting the optimizer touch them.
    """
    return default_loss(flow.log_prob, flow.train_log_prob)


def default_loss(log_prob: Callable, train_log_prob: Optional[Callable]) -> Callable:
    """:func:`nll_loss` from the flow's two density functions."""
    if train_log_prob is None:
        def loss(params, x, context=None):
            return -jnp.mean(log_prob(params, x, context))
    else:
        def loss(params, x, context=None):
            lp, new_params = train_log_prob(params, x, context)
            return -jnp.mean(lp), split_state(new_params)[1]
    return loss


def init_optimizer(optimizer: optax.GradientTransformation, params):
    """The optimizer state for ``params``' trainable part (state leaves excluded)."""
    return optimizer.init(split_state(params)[0])


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.result_type(a), jnp.inexact)]
    return jnp.stack(leaves).all() if leaves else jnp.array(True)


def _select(ok, new, old):
    """``new`` where ``ok`` else ``old``, leaf by leaf (ints such as Adam's count too)."""
    return jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, old)


def guarded_step(objective: Callable, optimizer: optax.GradientTransformation) -> Callable:
    """The pure (un-jitted) step ``(params, opt_state, *args) -> (params, opt_state, loss)``.

    ``objective(params, *args)`` returns a scalar loss, or ``(loss, new_state)``.
    A step is applied when ``loss``, every gradient and every updated
    parameter are finite; otherwise the incoming ``params`` and ``opt_state``
    come back unchanged and the returned loss is non-finite (NaN when the loss
    itself was finite), so ``isfinite(loss)`` says whether the step was applied.
    """
    def step(params, opt_state, *args):
        trainable, state = split_state(params)

        def value(t):
            out = objective(merge_state(t, state), *args)
            return out if isinstance(out, tuple) else (out, state)

        (loss, new_state), grads = jax.value_and_grad(value, has_aux=True)(trainable)
        updates, new_opt_state = optimizer.update(grads, opt_state, trainable)
        new_params = merge_state(optax.apply_updates(trainable, updates), new_state)
        ok = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(new_params)
        reported = jnp.where(ok | ~jnp.isfinite(loss), loss, jnp.nan)
        return _select(ok, new_params, params), _select(ok, new_opt_state, opt_state), reported

    return step


def cached_call(cached: Callable, *args):
    """``cached(*args)`` through its ``functools.lru_cache``, or uncached when an
    argument is unhashable (an optimizer holding arrays, say)."""
    try:
        hash(args)
    except TypeError:
        return cached.__wrapped__(*args)
    return cached(*args)


@functools.lru_cache(maxsize=16)
def compiled_step(log_prob: Callable, train_log_prob: Optional[Callable],
                  optimizer: optax.GradientTransformation, loss_fn: Optional[Callable]) -> Callable:
    """:func:`make_step`'s jitted step, memoised on its (hashable) ingredients so that
    repeated calls with the same flow and optimizer reuse jit's compilation cache."""
    core = guarded_step(default_loss(log_prob, train_log_prob) if loss_fn is None else loss_fn,
                        optimizer)

    @jax.jit
    def step(params, opt_state, x, context=None):
        return core(params, opt_state, x, context)

    return step


def make_step(flow: Flow, optimizer: optax.GradientTransformation,
              loss_fn: Optional[Callable] = None) -> Callable:
    """One jitted optimisation step ``(params, opt_state, x, context=None) ->
    (params, opt_state, loss)``: ``value_and_grad`` of the NLL (or ``loss_fn``)
    and an optax update; ``opt_state`` is ``init_optimizer(optimizer, params)``.

    Guarded: if the loss, a gradient or an updated parameter is NaN/Inf the step
    returns the incoming ``params`` and ``opt_state`` unchanged and a non-finite
    loss (NaN if the loss itself was finite), so the caller can see it was skipped.
    This is the step :func:`jaxflows.fit` runs.
    """
    return cached_call(compiled_step, flow.log_prob, flow.train_log_prob, optimizer, loss_fn)


# --------------------------------------------------------------------------
# Counting skipped steps on the device (read once per host sync)
# --------------------------------------------------------------------------

class StepStats(NamedTuple):
    """Counters a training loop carries beside params, on the device."""

    steps: jax.Array        # steps taken, applied or skipped (int32)
    loss_sum: jax.Array     # sum of the applied steps' losses since reset_sums
    ok_steps: jax.Array     # applied steps since reset_sums
    bad_run: jax.Array      # current run of consecutive skipped steps
    max_bad_run: jax.Array  # longest run since reset_sums (the run carried into it counts)
    tripped_at: jax.Array   # the step at which a run first reached the limit; -1 before


def zero_stats() -> StepStats:
    i = jnp.zeros((), jnp.int32)
    return StepStats(i, jnp.zeros((), jnp.float32), i, i, i, jnp.full((), -1, jnp.int32))


def tally(stats: StepStats, loss, limit: int) -> StepStats:
    """The counters after one step that reported ``loss`` (applied iff finite)."""
    ok = jnp.isfinite(loss)
    bad_run = jnp.where(ok, 0, stats.bad_run + 1)
    tripped = (stats.tripped_at < 0) & (bad_run >= limit)
    return StepStats(stats.steps + 1,
                     stats.loss_sum + jnp.where(ok, loss, 0.0).astype(jnp.float32),
                     stats.ok_steps + ok.astype(jnp.int32), bad_run,
                     jnp.maximum(stats.max_bad_run, bad_run),
                     jnp.where(tripped, stats.steps, stats.tripped_at))


def reset_sums(stats: StepStats) -> StepStats:
    """Start a new period (an epoch): zero the sums, keep the run of skipped steps."""
    return stats._replace(loss_sum=jnp.zeros((), jnp.float32), ok_steps=jnp.zeros((), jnp.int32),
                          max_bad_run=stats.bad_run)


DIVERGENCE_ADVICE = ("Try a lower learning rate, gradient clipping "
                     "(optax.chain(optax.clip_by_global_norm(1.0), optax.adam(...))), or "
                     "standardising the data (zero mean, unit variance per column)")
