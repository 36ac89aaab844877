"""Maximum-likelihood training with optax: ``make_step`` and ``fit``.

The loss is the mean negative log-likelihood of a batch ``x: (B, dim)``,
``L(theta) = -(1/B) sum_i log p_theta(x_i | c_i)`` in nats. One jitted step is
``value_and_grad(L)`` followed by an optax update, guarded so that a
non-finite loss or gradient leaves ``params`` and the optimizer state exactly
as they were (the step is *skipped* and counted).

:func:`fit` adds what a user relies on around that step: a validation split
(or explicit validation data), early stopping with patience, the best params
by validation loss, a history, a tqdm progress bar, data-parallel sharding
over a :class:`jax.sharding.Mesh`, and resumable checkpoints. The host syncs
once per epoch (to read the epoch's losses), never per step.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import numbers
import os
import time
import warnings
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .bijectors.batchnorm import merge_state, split_state
from .flows import Flow

class FitWarning(UserWarning):
    """Something :func:`fit` did that is worth knowing but not an error (a resumed
    run that had already finished; a few non-finite samples from the fitted flow)."""


# Training-state file written into ``checkpoint_dir`` by :func:`fit`.
TRAIN_STATE_FILE = "train_state.ckpt"
DATA_AXIS = "data"


def nll_loss(flow: Flow) -> Callable:
    """``loss(params, x, context) = -mean(log p(x | context))`` in nats.

    For a flow with batch-norm layers (``flow.train_log_prob`` set) the loss
    uses the training-mode density (batch statistics) and returns
    ``(loss, new_state)``: the updated running statistics, which the step
    stores instead of letting the optimizer touch them.
    """
    return _default_loss(flow.log_prob, flow.train_log_prob)


def _default_loss(log_prob: Callable, train_log_prob: Optional[Callable]) -> Callable:
    if train_log_prob is None:
        def loss(params, x, context=None):
            return -jnp.mean(log_prob(params, x, context))
    else:
        def loss(params, x, context=None):
            lp, new_params = train_log_prob(params, x, context)
            return -jnp.mean(lp), split_state(new_params)[1]
    return loss


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.result_type(a), jnp.inexact)]
    return jnp.stack(leaves).all() if leaves else jnp.array(True)


def _select(ok, new, old):
    """``new`` where ``ok`` else ``old``, leaf by leaf (ints such as Adam's count too)."""
    return jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, old)


def _guarded_update(loss_fn, optimizer, params, opt_state, x, context):
    """``(params, opt_state, loss, ok)`` after one guarded optax step.

    The optimizer sees only the trainable part of ``params``
    (``batchnorm.split_state``); state leaves such as batch-norm running
    statistics are replaced by what ``loss_fn`` returns beside the loss (a
    loss that returns a bare scalar leaves them as they are).
    ``ok = isfinite(loss) and all(isfinite(grads))``; when ``ok`` is false the
    returned params and optimizer state are the inputs, bit for bit.
    """
    trainable, state = split_state(params)

    def objective(t):
        out = loss_fn(merge_state(t, state), x, context)
        return out if isinstance(out, tuple) else (out, state)

    (loss, new_state), grads = jax.value_and_grad(objective, has_aux=True)(trainable)
    updates, new_opt_state = optimizer.update(grads, opt_state, trainable)
    new_params = merge_state(optax.apply_updates(trainable, updates), new_state)
    ok = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(new_params)
    return (_select(ok, new_params, params), _select(ok, new_opt_state, opt_state), loss, ok)


def init_optimizer(optimizer: optax.GradientTransformation, params):
    """The optimizer state for ``params``' trainable part (state leaves excluded)."""
    return optimizer.init(split_state(params)[0])


def make_step(flow: Flow, optimizer: optax.GradientTransformation,
              loss_fn: Optional[Callable] = None) -> Callable:
    """One jitted optimisation step ``(params, opt_state, x, context=None) ->
    (params, opt_state, loss)``: ``value_and_grad`` of the NLL and an optax update.

    Guarded: if the loss or any gradient is NaN/Inf the step returns the
    incoming ``params`` and ``opt_state`` unchanged (and the non-finite loss,
    so the caller can see it was skipped).
    """
    loss_fn = nll_loss(flow) if loss_fn is None else loss_fn

    @jax.jit
    def step(params, opt_state, x, context=None):
        params, opt_state, loss, _ = _guarded_update(loss_fn, optimizer, params, opt_state, x, context)
        return params, opt_state, loss

    return step


# --------------------------------------------------------------------------
# The training carry: everything one step reads and writes, as one pytree.
# A model-state field (e.g. batch-norm running statistics) would be added here.
# --------------------------------------------------------------------------

class Stats(NamedTuple):
    """Per-epoch accumulators kept on the device (read once per epoch)."""

    loss_sum: jax.Array      # sum of finite step losses
    ok_steps: jax.Array      # number of applied steps
    bad_run: jax.Array       # current run of consecutive skipped steps
    max_bad_run: jax.Array   # longest run of consecutive skipped steps this epoch


class Carry(NamedTuple):
    params: Any
    opt_state: Any
    stats: Stats


def _zero_stats() -> Stats:
    return Stats(jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32),
                 jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def _train_step(loss_fn, optimizer):
    def step(carry: Carry, x, context):
        params, opt_state, loss, ok = _guarded_update(loss_fn, optimizer, carry.params,
                                                      carry.opt_state, x, context)
        s = carry.stats
        bad_run = jnp.where(ok, 0, s.bad_run + 1)
        stats = Stats(s.loss_sum + jnp.where(ok, loss, 0.0).astype(jnp.float32),
                      s.ok_steps + ok.astype(jnp.int32), bad_run,
                      jnp.maximum(s.max_bad_run, bad_run))
        return Carry(params, opt_state, stats)

    return step


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
def _compiled(log_prob: Callable, train_log_prob: Optional[Callable], optimizer, loss_fn, mesh):
    """Jitted ``(train_step, eval_step)``, memoised on their (hashable) inputs so
    that repeated ``fit`` calls with the same flow and optimizer (a resumed
    run, a sweep over data) reuse jit's compilation cache."""
    if loss_fn is None:
        loss_fn = _default_loss(log_prob, train_log_prob)
    kw = {} if mesh is None else {
        "out_shardings": jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())}
    return jax.jit(_train_step(loss_fn, optimizer), **kw), jax.jit(_eval_step(log_prob), **kw)


@functools.lru_cache(maxsize=16)
def _default_optimizer(learning_rate: float) -> optax.GradientTransformation:
    return optax.adam(learning_rate)


# --------------------------------------------------------------------------
# Data: NumPy stays on the host (one batch is copied per step), JAX arrays stay
# on their device (gathered there).
# --------------------------------------------------------------------------

def _check_rows(a, name: str, dim: Optional[int]):
    """Validate ``a: (n, dim)`` float and finite; NumPy stays NumPy, JAX stays JAX."""
    is_jax = isinstance(a, jax.Array)
    if not is_jax:
        a = np.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {a.dtype}")
    if a.ndim != 2 or (dim is not None and a.shape[1] != dim):
        want = f"(n, {dim})" if dim is not None else "(n, d)"
        raise ValueError(f"{name} must have shape {want}, got shape {tuple(a.shape)}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} has no rows (shape {tuple(a.shape)})")
    finite = np.asarray(jnp.isfinite(a).all(axis=1) if is_jax else np.isfinite(a).all(axis=1))
    if not finite.all():
        rows = np.flatnonzero(~finite)
        raise ValueError(
            f"{name} has {rows.size} row(s) with NaN or Inf values (first at row {rows[0]}); "
            "remove or impute them before training"
        )
    return a


def _take(a, idx: np.ndarray):
    return a[jnp.asarray(idx)] if isinstance(a, jax.Array) else a[idx]


def _placer(mesh):
    """``place(batch)``: put a host or device batch on the device(s).

    With a mesh the leading axis is split over the mesh's ``"data"`` axis.
    ``jax.make_array_from_callback`` asks only for the slices this process's
    devices hold, so under multi-host training each process copies only its
    own rows (every process must pass the same data and key).
    """
    if mesh is None:
        return lambda b: None if b is None else jnp.asarray(b)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DATA_AXIS))

    def place(b):
        if b is None:
            return None
        if isinstance(b, jax.Array):
            return jax.device_put(b, sharding)
        return jax.make_array_from_callback(b.shape, sharding, lambda index: b[index])

    return place


def _replicate(tree, mesh):
    if mesh is None:
        return tree
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.device_put(tree, rep)


def _auto_mesh(mesh):
    """``mesh`` with every axis of type ``Auto``.

    ``jax.make_mesh`` makes ``Explicit`` axes by default (sharding in the
    types), which ``lax.scan`` carries inside the flows reject; the compiler
    partitions the step just as well with ``Auto`` axes and the same devices.
    """
    if mesh is None:
        return None
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(f"mesh must have an axis named {DATA_AXIS!r}, got axes {mesh.axis_names}; "
                         "build it with jax.make_mesh((jax.device_count(),), ('data',))")
    return jax.sharding.Mesh(mesh.devices, mesh.axis_names)


def _mesh_size(mesh) -> int:
    return 1 if mesh is None else int(mesh.shape[DATA_AXIS])


def _key_fingerprint(key) -> list:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return [int(v) for v in np.asarray(key).ravel()]


def _permutation(key, n: int, *salt: int) -> np.ndarray:
    """A permutation of ``range(n)`` that is a deterministic function of
    ``key`` and ``salt``, drawn on the host (NumPy: no device work, no compile)."""
    return np.random.default_rng(_key_fingerprint(key) + list(salt)).permutation(n)


def _host_tree(tree):
    """Fetch a (possibly replicated, possibly multi-host) pytree to NumPy."""
    def get(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(a.addressable_data(0))
        return np.asarray(a)
    return jax.tree_util.tree_map(get, tree)


# --------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------

def fit(
    flow: Flow,
    params,
    data,
    *,
    key,
    optimizer: Optional[optax.GradientTransformation] = None,
    learning_rate: Optional[float] = None,
    batch_size: int = 256,
    num_epochs: int = 50,
    context=None,
    val_data=None,
    val_context=None,
    val_fraction: float = 0.1,
    patience: Optional[int] = 10,
    progress: bool = True,
    mesh: Optional[jax.sharding.Mesh] = None,
    checkpoint_dir: Optional[str] = None,
    resume: bool = False,
    max_bad_steps: int = 50,
    loss_fn: Optional[Callable] = None,
    run_settings: Optional[Dict[str, Any]] = None,
) -> Tuple[Any, Dict[str, Any]]:
    """Fit ``params`` to ``data: (n, dim)`` by maximum likelihood.

    Each epoch shuffles the training rows (deterministically from ``key``
    and the epoch number, on the host) into minibatches of ``batch_size``;
    the last, smaller batch is dropped so every step has one shape and
    compiles once. NumPy data stays on the host and one batch at a time is
    copied to the device; a JAX array stays where it is and is gathered there.

    Args:
      flow, params: the flow and its initial params.
      data: ``(n, dim)`` float, NumPy or JAX; no NaN/Inf rows and no column
        with zero variance (refused, naming it: its likelihood is unbounded).
        Factory flows expect roughly standardised data: on data far from zero
        mean / unit variance ``fit`` warns (``jaxflows.RawScaleWarning``), and
        an NSF warns when over 1% of the values lie outside its spline bound.
        Train on raw data with ``flow = jaxflows.standardize(flow, data)``: the
        standardisation is then part of the flow, NumPy data are standardised
        in float64 on the host before the cast to the flow's dtype, and the
        losses in ``history`` are in the data's units.
      key: PRNG key; the whole fit is a deterministic function of it.
      optimizer: any ``optax.GradientTransformation`` (schedules, clipping
        via ``optax.chain``); default ``optax.adam(learning_rate or 1e-3)``.
      learning_rate: only for the default optimizer.
      batch_size: rows per step (capped at the training-set size); with a
        ``mesh`` it must be divisible by the mesh's ``"data"`` axis size.
      num_epochs: maximum number of epochs.
      context: ``(n, context_dim)`` for conditional flows.
      val_data, val_context: explicit validation rows. If ``val_data`` is
        None, a fraction ``val_fraction`` of ``data`` (chosen from ``key``) is
        held out; ``val_fraction=0`` trains on everything without validation.
      patience: stop after this many epochs without a better validation
        loss (``None``: never stop early). Needs validation data.
      progress: show a tqdm bar over epochs (``False`` to silence); it shows the
        epoch's mean negative log-likelihood per row (nats) on the training and
        validation rows, as given to ``fit``.
      mesh: a ``jax.sharding.Mesh`` with a ``"data"`` axis: each batch is
        sharded along it and params/optimizer state are replicated.
      checkpoint_dir: write the training state there after every epoch
        (atomically, :func:`jaxflows.checkpoint.save`).
      resume: continue from ``checkpoint_dir`` if it holds a training state;
        the result equals an uninterrupted run. The state must come from the
        same run: same ``key``, flow (its ``config``), ``batch_size``, data
        (shapes and a SHA-256 of the contents of ``data``, ``context`` and
        explicit ``val_data``/``val_context``), optimizer (the default Adam's
        ``learning_rate``; for a given ``optimizer``, the structure of its
        state and any hyperparameters stored in it, e.g. by
        ``optax.inject_hyperparams``) and ``run_settings``; otherwise a
        ``ValueError`` names each difference. ``num_epochs`` and ``patience``
        may change. Resuming a finished fit warns and returns its best params.
        Two fits cannot share a ``checkpoint_dir`` at once: the second raises
        ``checkpoint.DirectoryLocked`` (an ``OSError``).
      max_bad_steps: stop with an error once this many consecutive steps
        had a non-finite loss or gradient (each such step is skipped).
      loss_fn: ``loss(params, x, context) -> ()``; default the mean NLL.
      run_settings: optional JSON-serialisable dict of settings that define
        the run and that ``fit`` cannot read from an optax transformation
        (e.g. ``{"lr": 3e-3, "clip": 1.0}``); stored with the training state
        and compared on resume.

    Returns:
      ``(params, history)``: the params of the epoch with the lowest
      validation loss (the last epoch's when there is no validation data),
      and ``history`` with per-epoch lists ``train_loss``, ``val_loss`` (mean
      NLL, nats), ``epoch_seconds``, ``skipped_steps``, plus ``best_epoch``
      (0-based), ``stopped_early`` and ``num_epochs_run``.

    Raises:
      ValueError: a bad argument (named in the message), or a resume from
        another run's training state.
      FloatingPointError: the NaN/Inf guard kept skipping steps, or the final
        params give non-finite samples or log-densities on a check batch (the
        loss can stay finite while the flow is already broken, e.g. a learning
        rate far too high on heavy-tailed data); the message says what to try,
        and ``err.params``/``err.history`` hold the best params and history.
    """
    _check_fit_arguments(batch_size=batch_size, num_epochs=num_epochs,
                         max_bad_steps=max_bad_steps, learning_rate=learning_rate,
                         run_settings=run_settings)
    data = _check_rows(data, "data", flow.dim)
    if context is not None:
        context = _check_rows(context, "context", flow.context_dim)
        if context.shape[0] != data.shape[0]:
            raise ValueError(f"context has {context.shape[0]} rows but data has {data.shape[0]}")
    elif flow.context_dim is not None:
        raise ValueError(f"this flow is conditional (context_dim={flow.context_dim}): pass context=")
    if optimizer is not None and learning_rate is not None:
        raise ValueError("pass either optimizer= or learning_rate= (for the default Adam), not both")
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be None or a positive integer, got {patience!r}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir=")
    default_lr = None if optimizer is not None else (1e-3 if learning_rate is None else float(learning_rate))
    optimizer = optimizer if optimizer is not None else _default_optimizer(default_lr)
    mesh = _auto_mesh(mesh)
    devices = _mesh_size(mesh)

    # ---- raw-scale data: refuse zero-variance columns, warn about unstandardised data, and
    # standardise on the host in float64 for a flow from jaxflows.standardize (trained as the
    # flow it wraps, same params; its NLL in data units is the wrapped flow's + nll_offset)
    from .standardizing import prepare_fit  # local: standardizing imports flows and data
    if val_data is not None:
        val_data = _check_rows(val_data, "val_data", flow.dim)
    model_flow = flow
    flow, data, val_data, nll_offset = prepare_fit(flow, data, val_data, loss_fn)

    # ---- validation rows ------------------------------------------------
    explicit_val = val_data is not None
    split_key, loop_key = jax.random.split(key)
    n_all = data.shape[0]
    if val_data is not None:
        val_data = _check_rows(val_data, "val_data", flow.dim)
        if flow.context_dim is not None:
            if val_context is None:
                raise ValueError("this flow is conditional: pass val_context= with val_data=")
            val_context = _check_rows(val_context, "val_context", flow.context_dim)
            if val_context.shape[0] != val_data.shape[0]:
                raise ValueError(f"val_context has {val_context.shape[0]} rows but val_data has "
                                 f"{val_data.shape[0]}")
        train_x, train_c = data, context
    elif val_fraction > 0 and n_all >= 2:
        n_val = min(max(1, int(round(n_all * val_fraction))), n_all - 1)
        perm = _permutation(split_key, n_all)
        tr, va = np.sort(perm[n_val:]), np.sort(perm[:n_val])
        train_x, val_data = _take(data, tr), _take(data, va)
        train_c = None if context is None else _take(context, tr)
        val_context = None if context is None else _take(context, va)
    else:
        train_x, train_c = data, context
    has_val = val_data is not None

    n = train_x.shape[0]
    batch_size = min(int(batch_size), n)
    if batch_size < 1:
        raise ValueError("data is empty")
    if batch_size % devices:
        batch_size -= batch_size % devices
        if batch_size < devices:
            raise ValueError(f"batch_size must be at least the mesh's {devices} devices "
                             f"(the training set has {n} rows)")
    steps_per_epoch = n // batch_size

    # ---- compiled functions ---------------------------------------------
    place = _placer(mesh)
    try:
        train_step, eval_step = _compiled(flow.log_prob, flow.train_log_prob, optimizer, loss_fn, mesh)
    except TypeError:  # an unhashable optimizer or loss: no memo
        train_step, eval_step = _compiled.__wrapped__(flow.log_prob, flow.train_log_prob, optimizer,
                                                      loss_fn, mesh)

    def validate(p):
        if not has_val:
            return float("nan")
        m = val_data.shape[0]
        acc = _replicate((jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32)), mesh)
        for start in range(0, m, batch_size):
            idx = np.arange(start, start + batch_size)
            mask = idx < m
            idx = np.where(mask, idx, 0)
            ctx = None if val_context is None else place(_take(val_context, idx))
            acc = eval_step(acc, p, place(_take(val_data, idx)), ctx, place(mask))
        total, bad = (float(v) for v in _host_tree(acc))
        return total / m if bad == 0 else float("inf")

    # ---- state, or resume -------------------------------------------------
    opt_state = init_optimizer(optimizer, params)
    history: Dict[str, Any] = {"train_loss": [], "val_loss": [], "epoch_seconds": [],
                               "skipped_steps": []}
    best_params, best_val, best_epoch, since_best, start_epoch = params, math.inf, -1, 0, 0
    stopped_early = False
    fingerprint = None
    state_path = None
    held = contextlib.ExitStack()  # the checkpoint directory's lock, released when fit ends
    if checkpoint_dir is not None:
        from . import checkpoint as ckpt  # local: checkpoint imports train-free modules only
        state_path = os.path.join(checkpoint_dir, TRAIN_STATE_FILE)
        fingerprint = _run_fingerprint(
            run_settings=run_settings, key=key, flow_config=model_flow.config, dim=flow.dim,
            n_train=n, n_val=int(val_data.shape[0]) if has_val else 0, batch_size=batch_size,
            learning_rate=default_lr, opt_state=opt_state,
            arrays={"data": data, "context": context,
                    "val_data": val_data if explicit_val else None,
                    "val_context": val_context if explicit_val else None})
        held.enter_context(ckpt.directory_lock(checkpoint_dir, "another fit"))
        if resume and os.path.exists(state_path):
            def same_run(state):
                _refuse_other_run(state_path, state.get("fingerprint"), fingerprint)

            try:
                st = ckpt.read_train_state(state_path, params, opt_state, check=same_run)
            except BaseException:
                held.close()
                raise
            params, opt_state, best_params = st["params"], st["opt_state"], st["best_params"]
            history, best_val = st["history"], st["best_val"]
            best_epoch, since_best = st["best_epoch"], st["since_best"]
            start_epoch, stopped_early = st["epoch"], st["stopped_early"]
            if stopped_early or start_epoch >= num_epochs:
                how = (f"it stopped early at epoch {start_epoch} (patience)" if stopped_early else
                       f"it ran {start_epoch} epochs and num_epochs is {num_epochs}; raise "
                       "num_epochs to train longer")
                warnings.warn(f"checkpoint '{state_path}' holds a finished fit: {how}. Nothing is "
                              "left to train; returning its best params", FitWarning, stacklevel=2)

    carry = _replicate(Carry(params, opt_state, _zero_stats()), mesh)
    bar = None
    if progress and start_epoch < num_epochs and not stopped_early:
        from tqdm.auto import tqdm
        bar = tqdm(total=num_epochs, initial=start_epoch, desc="fit", unit="epoch",
                   dynamic_ncols=True)
    try:
        for epoch in range(start_epoch, num_epochs):
            if stopped_early:
                break
            t0 = time.perf_counter()
            perm = _permutation(loop_key, n, epoch)
            # keep the run of skipped steps across epochs; reset the epoch's sums
            carry = Carry(carry.params, carry.opt_state,
                          carry.stats._replace(loss_sum=jnp.zeros((), jnp.float32),
                                               ok_steps=jnp.zeros((), jnp.int32),
                                               max_bad_run=carry.stats.bad_run))
            for s in range(steps_per_epoch):
                idx = perm[s * batch_size:(s + 1) * batch_size]
                ctx = None if train_c is None else place(_take(train_c, idx))
                carry = train_step(carry, place(_take(train_x, idx)), ctx)
            stats = _host_tree(carry.stats)  # the one host sync per epoch
            ok, max_bad = int(stats.ok_steps), int(stats.max_bad_run)
            train_loss = float(stats.loss_sum) / ok if ok else float("nan")
            val_loss = validate(carry.params)
            history["train_loss"].append(train_loss + nll_offset)
            history["val_loss"].append(val_loss + nll_offset)
            history["skipped_steps"].append(steps_per_epoch - ok)
            history["epoch_seconds"].append(time.perf_counter() - t0)
            if max_bad >= max_bad_steps:
                err = FloatingPointError(
                    f"training stopped at epoch {epoch}: {steps_per_epoch - ok} of "
                    f"{steps_per_epoch} steps had a NaN/Inf loss or gradient and were skipped "
                    f"({max_bad} in a row). Try a lower learning rate, gradient clipping "
                    "(optax.chain(optax.clip_by_global_norm(1.0), optax.adam(...))), or "
                    "standardising the data (zero mean, unit variance per column)")
                err.params = best_params if best_epoch >= 0 else _host_tree(carry.params)
                err.history = history
                raise err
            if has_val:
                if val_loss < best_val:
                    best_val, best_epoch, since_best = val_loss, epoch, 0
                    best_params = carry.params
                else:
                    since_best += 1
                stopped_early = patience is not None and since_best >= patience
            else:
                best_epoch, best_params = epoch, carry.params
            if state_path is not None:
                _save_state(state_path, model_flow, carry, best_params, history, best_val, best_epoch,
                            since_best, epoch + 1, stopped_early, fingerprint)
            if bar is not None:
                bar.update(1)
                # mean negative log-likelihood per row (nats) of the data given to fit, in
                # their units (as in the history)
                post = {"train NLL": f"{train_loss + nll_offset:.4f}"}
                if has_val:
                    post["val NLL"] = f"{val_loss + nll_offset:.4f}"
                bar.set_postfix(post, refresh=False)
    finally:
        if bar is not None:
            bar.close()
        held.close()

    if best_epoch < 0:  # no epoch ran (num_epochs=0)
        best_params = carry.params
    history["best_epoch"] = best_epoch
    history["stopped_early"] = bool(stopped_early)
    history["num_epochs_run"] = len(history["train_loss"])
    if mesh is not None:  # replicated over the mesh -> one copy on the default device
        best_params = _host_tree(best_params)
    if history["num_epochs_run"] > start_epoch:  # epochs ran in this call: check what they gave
        _check_final_params(flow, best_params, key, train_c, history)
    return jax.tree_util.tree_map(jnp.asarray, best_params), history


def _check_fit_arguments(*, batch_size, num_epochs, max_bad_steps, learning_rate, run_settings):
    """Refuse bad scalar arguments of :func:`fit` with a message naming them."""
    for name, value, least in (("batch_size", batch_size, 1), ("num_epochs", num_epochs, 0),
                               ("max_bad_steps", max_bad_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if learning_rate is not None:
        try:
            lr = float(learning_rate)
        except (TypeError, ValueError):
            raise TypeError(f"learning_rate must be a number, got {learning_rate!r}") from None
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"learning_rate must be a positive finite number, got {learning_rate!r}")
    if run_settings is not None:
        if not isinstance(run_settings, dict):
            raise TypeError(f"run_settings must be a dict, got {type(run_settings).__name__}")
        try:
            json.dumps(run_settings, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"run_settings must hold JSON data (numbers, strings, lists, dicts): "
                            f"{err}") from None


def _content_hash(arrays: Dict[str, Any]) -> Dict[str, Any]:
    """Shape, dtype and SHA-256 of each array (hashed in row chunks: bounded memory)."""
    out = {}
    for name, a in arrays.items():
        if a is None:
            continue
        h = hashlib.sha256()
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            digest = "not hashed (spread over several processes)"
        else:
            rows = max(1, (1 << 24) // max(1, int(np.prod(a.shape[1:])) * a.dtype.itemsize))
            for start in range(0, a.shape[0], rows):
                h.update(np.ascontiguousarray(np.asarray(a[start:start + rows])).data)
            digest = h.hexdigest()[:16]
        out[name] = {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": digest}
    return out


def _run_fingerprint(*, run_settings, key, flow_config, dim, n_train, n_val, batch_size,
                     learning_rate, opt_state, arrays) -> Dict[str, Any]:
    """What identifies a run, as JSON data: a resumed fit must match it exactly."""
    leaves, treedef = jax.tree_util.tree_flatten(opt_state)
    hyper = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        name = jax.tree_util.keystr(path)
        if "hyperparams" in name and np.size(leaf) == 1:  # optax.inject_hyperparams
            hyper[name] = float(np.asarray(leaf))
    optimizer = {"state_structure": hashlib.sha256(str(treedef).encode()).hexdigest()[:16],
                 "hyperparams": hyper}
    if learning_rate is not None:
        optimizer = {"default_adam_learning_rate": learning_rate, **optimizer}
    fp = {"settings": run_settings or {}, "flow": flow_config, "key": _key_fingerprint(key),
          "dim": int(dim), "n_train": int(n_train), "n_val": int(n_val),
          "batch_size": int(batch_size), "optimizer": optimizer, "data": _content_hash(arrays)}
    return json.loads(json.dumps(fp))  # as it reads back from the file (lists, not tuples)


def _differences(old, new, prefix: str = "") -> list:
    out = []
    keys = list(new) + [k for k in old if k not in new]
    for k in keys:
        a, b = old.get(k, "absent"), new.get(k, "absent")
        name = f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            # the caller's settings read as given ("--layers"); the rest as paths
            out += _differences(a, b, "" if (prefix == "" and k == "settings") else name + ".")
        elif a != b:
            if name.startswith("data.") and name.endswith(".sha256"):  # same shape, other values
                name = name.split(".")[1] + " contents (SHA-256)"
            out.append(f"{name}: checkpoint {a}, now {b}")
    return out


def _refuse_other_run(path: str, saved, now) -> None:
    if saved == now:
        return
    if not isinstance(saved, dict):
        raise ValueError(f"checkpoint '{path}' has no run fingerprint (written by an older "
                         "jaxflows?); use another checkpoint_dir")
    diffs = _differences(saved, now)
    raise ValueError(f"checkpoint '{path}' was written by a different run, not resuming it: "
                     + "; ".join(diffs) + ". Resume with the same settings and data, or write "
                     "to another checkpoint_dir")


@functools.lru_cache(maxsize=16)
def _compiled_draw(sample_and_log_prob: Callable, m: int, conditional: bool):
    shape = () if conditional else (m,)
    return jax.jit(lambda p, k, c: sample_and_log_prob(p, k, shape, c))


CHECK_SAMPLES = 64


def _check_final_params(flow: Flow, params, key, context, history) -> None:
    """Draw a batch from the fitted flow: its samples and their log-densities
    must be finite. The NaN guard watches the loss, which can stay finite while
    sampling (the other direction of the flow) has already broken down."""
    m = CHECK_SAMPLES
    ctx = None
    if flow.context_dim is not None:
        m = min(m, context.shape[0])
        ctx = jnp.asarray(_take(context, np.arange(m)))
    draw = _compiled_draw(flow.sample_and_log_prob, m, ctx is not None)
    x, lp = draw(params, jax.random.fold_in(key, 0x5AFE), ctx)
    bad = int(np.sum(~(np.isfinite(np.asarray(x)).all(axis=-1) & np.isfinite(np.asarray(lp)))))
    if bad == 0:
        return
    what = (f"{bad} of {m} samples drawn from the fitted flow (or their log-densities) are "
            "NaN or Inf")
    if 2 * bad > m:
        err = FloatingPointError(
            f"{what}, although the training loss stayed finite: the fit diverged. Try a lower "
            "learning rate, gradient clipping (optax.chain(optax.clip_by_global_norm(1.0), "
            "optax.adam(...))), or standardising the data (zero mean, unit variance per column)")
        err.params, err.history = params, history
        raise err
    warnings.warn(f"{what}: the flow's far tails overflow; check samples before using them",
                  FitWarning, stacklevel=3)


def _save_state(path, flow, carry, best_params, history, best_val, best_epoch, since_best,
                epoch, stopped_early, fingerprint):
    from . import checkpoint as ckpt
    if jax.process_index() != 0:
        return
    ckpt.write_train_state(path, flow, {
        "params": _host_tree(carry.params), "opt_state": _host_tree(carry.opt_state),
        "best_params": _host_tree(best_params), "history": history, "best_val": best_val,
        "best_epoch": best_epoch, "since_best": since_best, "epoch": epoch,
        "stopped_early": stopped_early, "fingerprint": fingerprint})
