"""Maximum-likelihood training with optax: :func:`fit` (and ``make_step``, its step).

The loss is the mean negative log-likelihood of a batch ``x: (B, dim)``,
``L(theta) = -(1/B) sum_i log p_theta(x_i | c_i)`` in nats. One jitted step
(:func:`jaxflows.make_step`) is ``value_and_grad(L)`` followed by an optax
update, guarded so that a non-finite loss or gradient leaves ``params`` and the
optimizer state exactly as they were (the step is *skipped* and counted).

:func:`fit` composes named parts around that step:

- the data (:mod:`jaxflows.training_data`): rows checked (floating point,
  ``(n, dim)``, finite), a validation split drawn from ``key``, each epoch's
  shuffle drawn on the host from ``key`` and the epoch number, minibatches of
  ``batch_size`` with the last incomplete one dropped (one shape, one compile).
  NumPy data stays on the host and one batch at a time is copied to the device;
  a JAX array stays where it is and is gathered there. Factory flows expect
  roughly standardised data: on data far from zero mean / unit variance ``fit``
  warns (``jaxflows.RawScaleWarning``), and refuses a zero-variance column
  (its likelihood is unbounded). For a flow from ``jaxflows.standardize`` the
  standardisation is part of the flow: NumPy data are standardised in float64
  on the host and the losses in ``history`` are in the data's units;
- placement (:mod:`jaxflows.sharding`): with a ``mesh`` each batch is split
  over its ``"data"`` axis and params/optimizer state are replicated;
- early stopping (:mod:`jaxflows.early_stopping`): the best params by
  validation loss, and a stop after ``patience`` epochs without improvement;
- resume (:mod:`jaxflows.resume`): the training state written after every
  epoch, and a run fingerprint that a resumed fit must match: same ``key``,
  flow config, ``batch_size``, data (shapes and SHA-256 of ``data``,
  ``context`` and explicit ``val_data``/``val_context``), optimizer (for the
  default Adam its rate; for an ``optimizer=`` the structure of its state and
  any hyperparameters kept in it by ``optax.inject_hyperparams``) and
  ``run_settings``; ``num_epochs`` and ``patience`` may change;
- per-epoch callbacks: the progress bar and the checkpoint writer.

The host syncs once per epoch (to read the epoch's losses), never per step.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from . import early_stopping
from .fit_checks import check_fit_arguments, check_fitted_samples
from .flows import Flow
from .resume import (TRAIN_STATE_FILE, TrainState, fresh_state, optimizer_fingerprint, restore,
                     run_fingerprint, save as save_state)
from .sharding import DATA_AXIS, auto_mesh, host_tree, mesh_size, placer, replicate, replicated
from .raw_scale import prepare_fit
from .steps import (DEFAULT_OPTIMIZER, DIVERGENCE_ADVICE, FitWarning, StepStats, TrainingDiverged,
                    cached_call, compiled_step, init_optimizer, make_step, nll_loss, reset_sums,
                    tally, zero_stats)
from .training_data import (Rows, Split, check_fit_rows, check_rows, epoch_batches,
                            fit_batch_size, padded_batches, validation_split)

__all__ = ["DATA_AXIS", "FitWarning", "TRAIN_STATE_FILE", "TrainingDiverged", "fit",
           "init_optimizer", "make_step", "nll_loss"]


class Carry(NamedTuple):
    """What one training step reads and writes, as one pytree on the device(s)."""

    params: Any
    opt_state: Any
    stats: StepStats


def _eval_step(log_prob: Callable):
    """``acc + sum_i mask_i * -log p(x_i)`` and a count of non-finite rows."""

    def step(acc, params, x, context, mask):
        nll = -log_prob(params, x, context)
        finite = jnp.isfinite(nll)
        total = acc[0] + jnp.sum(jnp.where(mask & finite, nll, 0.0))
        bad = acc[1] + jnp.sum(mask & ~finite)
        return total.astype(jnp.float32), bad.astype(jnp.int32)

    return step


@functools.lru_cache(maxsize=16)
def _compiled(log_prob: Callable, train_log_prob: Optional[Callable], optimizer, loss_fn, mesh,
              max_bad_steps: int):
    """Jitted ``(train_step, eval_step)``: ``train_step`` runs :func:`make_step`'s step
    and counts it. Memoised, so repeated fits with the same flow and optimizer
    (a resumed run, a sweep over data) reuse jit's compilation cache."""
    step = cached_call(compiled_step, log_prob, train_log_prob, optimizer, loss_fn)

    def train_step(carry: Carry, x, context):
        params, opt_state, loss = step(carry.params, carry.opt_state, x, context)
        return Carry(params, opt_state, tally(carry.stats, loss, max_bad_steps))

    kw = {} if mesh is None else {"out_shardings": replicated(mesh)}
    return jax.jit(train_step, **kw), jax.jit(_eval_step(log_prob), **kw)


class _Run(NamedTuple):
    """What every epoch of one fit needs, prepared once."""

    flow: Flow          # the flow trained (inside a standardize wrapper: the inner one)
    model_flow: Flow    # the flow the caller passed (saved with the training state)
    split: Split
    nll_offset: float   # added to the trained flow's NLL: the NLL in the data's units
    loop_key: Any
    mesh: Any
    place: Callable
    batch_size: int
    train_step: Callable
    eval_step: Callable
    max_bad_steps: int
    arrays: Dict[str, Any]  # what the run fingerprint hashes: data, context, explicit val rows

    @property
    def steps_per_epoch(self) -> int:
        return self.split.train_x.shape[0] // self.batch_size


def _prepare(model_flow: Flow, rows: Rows, prepared, *, key, optimizer, loss_fn, val_fraction,
             batch_size, mesh, max_bad_steps) -> _Run:
    """Split the rows and compile the steps: everything else before the first epoch.
    ``prepared`` is ``raw_scale.prepare_fit``'s ``(flow, data, val_data, nll_offset)``."""
    flow, data, val_data, nll_offset = prepared
    split_key, loop_key = jax.random.split(key)
    if val_data is None:
        split = validation_split(data, rows.context, float(val_fraction), split_key)
    else:
        split = Split(data, rows.context, check_rows(val_data, "val_data", flow.dim),
                      rows.val_context)
    mesh = auto_mesh(mesh)
    batch_size = fit_batch_size(batch_size, split.train_x.shape[0], mesh_size(mesh))
    steps = cached_call(_compiled, flow.log_prob, flow.train_log_prob, optimizer, loss_fn, mesh,
                        max_bad_steps)
    explicit = val_data is not None
    arrays = {"data": data, "context": rows.context, "val_data": val_data if explicit else None,
              "val_context": rows.val_context if explicit else None}
    return _Run(flow, model_flow, split, nll_offset, loop_key, mesh, placer(mesh), batch_size,
                *steps, max_bad_steps, arrays)


def _validation_loss(run: _Run, params) -> Optional[float]:
    """Mean NLL of the validation rows (``inf`` if any is non-finite); ``None`` without them."""
    val_x = run.split.val_x
    if val_x is None:
        return None
    acc = replicate((jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)), run.mesh)
    for x, c, mask in padded_batches(val_x, run.split.val_c, run.batch_size, run.place):
        acc = run.eval_step(acc, params, x, c, mask)
    total, bad = (float(v) for v in host_tree(acc))
    return total / val_x.shape[0] if bad == 0 else math.inf


def _check_divergence(run: _Run, stats, state: TrainState, carry: Carry, epoch: int) -> None:
    """Raise :class:`TrainingDiverged` once ``max_bad_steps`` steps in a row were skipped."""
    max_bad = int(stats.max_bad_run)
    if max_bad < run.max_bad_steps:
        return
    steps, ok = run.steps_per_epoch, int(stats.ok_steps)
    best = state.stopping
    raise TrainingDiverged(
        f"training stopped at epoch {epoch}: {steps - ok} of {steps} steps had a NaN/Inf loss or "
        f"gradient and were skipped ({max_bad} in a row). {DIVERGENCE_ADVICE}",
        params=best.best_params if best.best_epoch >= 0 else host_tree(carry.params),
        history=state.history, epoch=epoch, step=int(stats.tripped_at), bad_steps=max_bad)


def _epoch(run: _Run, carry: Carry, state: TrainState, patience) -> Tuple[Carry, TrainState]:
    """One epoch: the steps, one host sync, the history, divergence and early stopping."""
    t0 = time.perf_counter()
    epoch = state.epoch
    carry = carry._replace(stats=reset_sums(carry.stats))
    for x, c in epoch_batches(run.split, run.batch_size, run.loop_key, epoch, run.place):
        carry = run.train_step(carry, x, c)
    stats = host_tree(carry.stats)  # the one host sync per epoch
    ok = int(stats.ok_steps)
    val_loss = _validation_loss(run, carry.params)
    h = state.history
    h["train_loss"].append((float(stats.loss_sum) / ok if ok else math.nan) + run.nll_offset)
    h["val_loss"].append((math.nan if val_loss is None else val_loss) + run.nll_offset)
    h["skipped_steps"].append(run.steps_per_epoch - ok)
    h["epoch_seconds"].append(time.perf_counter() - t0)
    _check_divergence(run, stats, state, carry, epoch)
    stopping = early_stopping.update(state.stopping, epoch, carry.params, val_loss, patience)
    return carry, TrainState(carry.params, carry.opt_state, h, stopping, epoch + 1)


class _ProgressBar:
    """Per-epoch callback: a tqdm bar over epochs showing the last train/val NLL."""

    def __init__(self, state: TrainState, num_epochs: int, has_val: bool):
        from tqdm.auto import tqdm
        self.has_val = has_val
        self.bar = tqdm(total=num_epochs, initial=state.epoch, desc="fit", unit="epoch",
                        dynamic_ncols=True)

    def __call__(self, state: TrainState) -> None:
        self.bar.update(1)
        # mean negative log-likelihood per row (nats) of the data given to fit, in their units
        post = {"train NLL": f"{state.history['train_loss'][-1]:.4f}"}
        if self.has_val:
            post["val NLL"] = f"{state.history['val_loss'][-1]:.4f}"
        self.bar.set_postfix(post, refresh=False)

    def close(self) -> None:
        self.bar.close()


def _open_checkpoint(run: _Run, params, opt_state, *, key, optimizer_is_default, checkpoint_dir,
                     resume, num_epochs, run_settings, held: contextlib.ExitStack):
    """The starting state (restored from ``checkpoint_dir`` when resuming) and the
    per-epoch callback that writes it; holds the directory's lock in ``held``."""
    path = os.path.join(checkpoint_dir, TRAIN_STATE_FILE)
    split = run.split
    fingerprint = run_fingerprint(
        run_settings=run_settings, key=key, flow_config=run.model_flow.config, dim=run.flow.dim,
        n_train=split.train_x.shape[0], n_val=0 if split.val_x is None else split.val_x.shape[0],
        batch_size=run.batch_size, optimizer=optimizer_fingerprint(opt_state, optimizer_is_default),
        arrays=run.arrays)
    # several processes: process 0 holds the lock and writes; all of them read on resume
    from .distributed import agree_on_resume, lock_directory
    lock_directory(held, checkpoint_dir, "another fit")
    try:
        state = (restore(path, params, opt_state, fingerprint, num_epochs) if resume
                 else fresh_state(params, opt_state))
    except Exception as err:
        agree_on_resume(path, None, err)  # tells the other processes, then raises err
        raise
    agree_on_resume(path, state.epoch, None)
    return state, lambda s: save_state(path, run.model_flow, s, fingerprint)


def _train(run: _Run, state: TrainState, num_epochs: int, patience, callbacks) -> TrainState:
    """Epochs from ``state.epoch`` until ``num_epochs`` or early stopping; after each one
    every callback sees the new state."""
    stats = zero_stats()._replace(steps=jnp.asarray(state.epoch * run.steps_per_epoch, jnp.int32))
    carry = replicate(Carry(state.params, state.opt_state, stats), run.mesh)
    while state.epoch < num_epochs and not state.stopping.stopped:
        carry, state = _epoch(run, carry, state, patience)
        for callback in callbacks:
            callback(state)
    return state


def _finish(run: _Run, state: TrainState, start_epoch: int, key):
    """``(best params, history)`` as :func:`fit` returns them, after checking that the
    fitted flow samples finite values when this call trained any epoch."""
    stopping = state.stopping
    best = state.params if stopping.best_epoch < 0 else stopping.best_params
    history = dict(state.history, best_epoch=stopping.best_epoch,
                   stopped_early=bool(stopping.stopped),
                   num_epochs_run=len(state.history["train_loss"]))
    if run.mesh is not None:  # replicated over the mesh -> one copy on the default device
        best = host_tree(best)
    if history["num_epochs_run"] > start_epoch:
        check_fitted_samples(run.flow, best, key, run.split.train_c, history)
    return jax.tree_util.tree_map(jnp.asarray, best), history


def fit(flow: Flow, params, data, *, key, optimizer: Optional[optax.GradientTransformation] = None,
        batch_size: int = 256, num_epochs: int = 50, context=None, val_data=None,
        val_context=None, val_fraction: float = 0.1, patience: Optional[int] = 10,
        progress: bool = True, mesh: Optional[jax.sharding.Mesh] = None,
        checkpoint_dir: Optional[str] = None, resume: bool = False, max_bad_steps: int = 50,
        loss_fn: Optional[Callable] = None,
        run_settings: Optional[Dict[str, Any]] = None) -> Tuple[Any, Dict[str, Any]]:
    """Fit ``params`` to ``data: (n, dim)`` by maximum likelihood (module docstring: the parts).

    Args:
      flow, params: the flow and its initial params.
      data: ``(n, dim)`` float, NumPy or JAX, finite, no zero-variance column.
      key: PRNG key; the whole fit (split, shuffles) is a deterministic function of it.
      optimizer: any optax transformation (schedules, ``optax.chain`` clipping);
        default ``optax.adam(1e-3)``.
      batch_size: rows per step (capped at the training rows; with a ``mesh``
        rounded down to a multiple of its ``"data"`` axis size).
      num_epochs: maximum number of epochs.
      context: ``(n, context_dim)`` for a conditional flow.
      val_data, val_context: validation rows; without them a fraction
        ``val_fraction`` of ``data`` is held out (``0``: no validation).
      patience: epochs without a better validation loss before stopping (``None``: never).
      progress: a tqdm bar over epochs with the train/validation NLL (nats per row).
      mesh: a ``jax.sharding.Mesh`` with a ``"data"`` axis to shard batches over, possibly
        over several processes (rows as global arrays: ``distributed.process_local_rows``).
      checkpoint_dir: where the training state is written (atomically) after every epoch.
      resume: continue from ``checkpoint_dir``'s state; the result equals an
        uninterrupted run. Another run's state (the fingerprint differs) is refused
        with a ``ValueError`` naming each difference; a finished one warns.
      max_bad_steps: raise once this many consecutive steps were skipped (NaN/Inf).
      loss_fn: ``loss(params, x, context) -> ()``; default the mean NLL.
      run_settings: JSON-serialisable settings ``fit`` cannot read from an optax
        transformation (e.g. ``{"lr": 3e-3}``), stored and compared on resume.

    Returns:
      ``(params, history)``: the params of the epoch with the lowest validation
      loss (the last epoch's without validation) and per-epoch lists
      ``train_loss``, ``val_loss`` (mean NLL, nats), ``epoch_seconds``,
      ``skipped_steps``, plus ``best_epoch``, ``stopped_early``, ``num_epochs_run``.

    Raises:
      ValueError, TypeError: a bad argument (named), or a resume of another run.
      TrainingDiverged: ``max_bad_steps`` skipped steps in a row, or non-finite samples
        from the fitted flow; it carries ``params`` (the best so far) and ``history``.
    """
    check_fit_arguments(batch_size=batch_size, num_epochs=num_epochs, max_bad_steps=max_bad_steps,
                        patience=patience, val_fraction=val_fraction, run_settings=run_settings,
                        resume=resume, checkpoint_dir=checkpoint_dir, mesh=mesh)
    rows = check_fit_rows(flow, data, context, val_data, val_context)
    prepared = prepare_fit(flow, rows.data, rows.val_data, loss_fn)  # warns about raw-scale data
    run = _prepare(flow, rows, prepared, key=key, loss_fn=loss_fn, val_fraction=val_fraction,
                   optimizer=DEFAULT_OPTIMIZER if optimizer is None else optimizer,
                   batch_size=batch_size, mesh=mesh, max_bad_steps=max_bad_steps)
    with contextlib.ExitStack() as held:  # the checkpoint directory's lock, the progress bar
        state, callbacks = _start(run, params, optimizer, key=key, checkpoint_dir=checkpoint_dir,
                                  resume=resume, num_epochs=num_epochs, run_settings=run_settings,
                                  progress=progress, held=held)
        start_epoch = state.epoch
        state = _train(run, state, num_epochs, patience, callbacks)
    return _finish(run, state, start_epoch, key)


def _start(run: _Run, params, optimizer, *, key, checkpoint_dir, resume, num_epochs, run_settings,
           progress, held: contextlib.ExitStack) -> Tuple[TrainState, list]:
    """The state the first epoch starts from (fresh, or resumed) and the per-epoch
    callbacks: the checkpoint writer, then the progress bar."""
    opt = DEFAULT_OPTIMIZER if optimizer is None else optimizer
    state, callbacks = fresh_state(params, init_optimizer(opt, params)), []
    if checkpoint_dir is not None:
        state, writer = _open_checkpoint(
            run, params, state.opt_state, key=key, optimizer_is_default=optimizer is None,
            checkpoint_dir=checkpoint_dir, resume=resume, num_epochs=num_epochs,
            run_settings=run_settings, held=held)
        callbacks.append(writer)
    if progress and state.epoch < num_epochs and not state.stopping.stopped:
        callbacks.append(held.enter_context(contextlib.closing(
            _ProgressBar(state, num_epochs, run.split.val_x is not None))))
    return state, callbacks
