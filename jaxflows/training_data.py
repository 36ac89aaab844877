"""The rows :func:`jaxflows.fit` trains and validates on, and how it walks them.

NumPy data stays on the host (one batch at a time is copied to the device); a
JAX array stays on its device and is gathered there. Shuffles are drawn on the
host with NumPy from the fit's key (no device work, no compile), so a fit is a
deterministic function of its key.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np


def check_rows(a, name: str, dim: Optional[int]):
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
    if is_jax and not a.is_fully_addressable:  # rows spread over several processes
        from .distributed import nonfinite_rows
        rows = nonfinite_rows(a)
    else:
        rows = np.flatnonzero(~np.asarray(jnp.isfinite(a).all(axis=1) if is_jax
                                          else np.isfinite(a).all(axis=1)))
    if rows.size:
        raise ValueError(
            f"{name} has {rows.size} row(s) with NaN or Inf values (first at row {rows[0]}); "
            "remove or impute them before training"
        )
    return a


def check_context(context, rows: int, context_dim: Optional[int], names=("context", "data"),
                  hint: str = ""):
    """``context`` checked against a flow's ``context_dim`` and the ``rows`` data rows."""
    if context is None:
        if context_dim is not None:
            raise ValueError(f"this flow is conditional (context_dim={context_dim}): "
                             f"pass {names[0]}={hint}")
        return None
    context = check_rows(context, names[0], context_dim)
    if context.shape[0] != rows:
        raise ValueError(f"{names[0]} has {context.shape[0]} rows but {names[1]} has {rows}")
    return context


class Rows(NamedTuple):
    """The rows given to fit, checked."""

    data: Any
    context: Any
    val_data: Any
    val_context: Any


def check_fit_rows(flow, data, context, val_data, val_context) -> Rows:
    """fit's rows checked against ``flow.dim`` and ``flow.context_dim`` (messages name
    fit's arguments)."""
    data = check_rows(data, "data", flow.dim)
    context = check_context(context, data.shape[0], flow.context_dim)
    if val_data is not None:
        val_data = check_rows(val_data, "val_data", flow.dim)
        if flow.context_dim is not None:
            val_context = check_context(val_context, val_data.shape[0], flow.context_dim,
                                        ("val_context", "val_data"), " with val_data=")
    return Rows(data, context, val_data, val_context)


def take(a, idx: np.ndarray):
    """Rows ``idx`` of ``a``, gathered where ``a`` lives (host or device)."""
    if isinstance(a, jax.Array) and not a.is_fully_addressable:  # spread over processes
        from .distributed import take_rows
        return take_rows(a, idx)
    return a[jnp.asarray(idx)] if isinstance(a, jax.Array) else a[idx]


def key_fingerprint(key) -> list:
    """A PRNG key (typed or raw) as a list of ints."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return [int(v) for v in np.asarray(key).ravel()]


def permutation(key, n: int, *salt: int) -> np.ndarray:
    """A permutation of ``range(n)`` that is a deterministic function of
    ``key`` and ``salt``, drawn on the host."""
    return np.random.default_rng(key_fingerprint(key) + list(salt)).permutation(n)


class Split(NamedTuple):
    """Training and validation rows (``val_x is None``: no validation)."""

    train_x: Any
    train_c: Any
    val_x: Any
    val_c: Any


def validation_split(data, context, val_fraction: float, key) -> Split:
    """Hold out ``round(n * val_fraction)`` random rows (at least one, never all) for
    validation, chosen by ``key``; ``val_fraction=0`` or a single row: no validation."""
    n = data.shape[0]
    if not (val_fraction > 0 and n >= 2):
        return Split(data, context, None, None)
    n_val = min(max(1, int(round(n * val_fraction))), n - 1)
    perm = permutation(key, n)
    tr, va = np.sort(perm[n_val:]), np.sort(perm[:n_val])
    pick = (lambda a, i: None if a is None else take(a, i))
    return Split(take(data, tr), pick(context, tr), take(data, va), pick(context, va))


def fit_batch_size(batch_size: int, n: int, devices: int) -> int:
    """``batch_size`` capped at the ``n`` training rows and rounded down to a multiple
    of the mesh's ``devices`` (each gets an equal share of every batch)."""
    batch_size = min(int(batch_size), n)
    if batch_size % devices:
        batch_size -= batch_size % devices
        if batch_size < devices:
            raise ValueError(f"batch_size must be at least the mesh's {devices} devices "
                             f"(the training set has {n} rows)")
    return batch_size


def epoch_batches(split: Split, batch_size: int, key, epoch: int, place):
    """The epoch's shuffled ``(x, context)`` batches, placed on the device(s); the
    last incomplete batch is dropped so every step has one shape."""
    n = split.train_x.shape[0]
    perm = permutation(key, n, epoch)
    for s in range(n // batch_size):
        idx = perm[s * batch_size:(s + 1) * batch_size]
        ctx = None if split.train_c is None else place(take(split.train_c, idx))
        yield place(take(split.train_x, idx)), ctx


def padded_batches(x, context, batch_size: int, place):
    """All rows of ``x`` in order, in batches of ``batch_size`` with the last one padded
    (by row 0): ``(x, context, mask)`` with ``mask`` false on the padding."""
    m = x.shape[0]
    for start in range(0, m, batch_size):
        idx = np.arange(start, start + batch_size)
        mask = idx < m
        idx = np.where(mask, idx, 0)
        ctx = None if context is None else place(take(context, idx))
        yield place(take(x, idx)), ctx, place(mask)
