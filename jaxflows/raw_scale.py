"""fit's checks of raw-scale data: :func:`prepare_fit`, run by :func:`jaxflows.fit` before training.

The flow factories are built for data of roughly zero mean and unit variance
per column (layers start at the identity, scale floors are absolute, splines
act on ``[-bound, bound]``).  Data far from that train slowly or to a poor
optimum, so ``fit`` warns (:class:`~jaxflows.RawScaleWarning`) and points to
:func:`jaxflows.standardize`; for a standardised flow it standardises the
data on the host in float64 before training.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .data import constant_columns_message
from .flows import Flow
from .standardizing import (CHUNK_ROWS, RawScaleWarning, flow_dtype, host_standardize,
                            split_standardization)

__all__ = ["prepare_fit", "MEAN_LIMIT", "STD_LIMITS", "SPLINE_OUTSIDE_LIMIT"]

# Column means beyond this, or standard deviations outside these bounds, in what the flow's
# first layer sees, make fit warn (factory flows only; see _warn_scale).
MEAN_LIMIT = 5.0
STD_LIMITS = (0.05, 5.0)
# fit warns when more than this fraction of the values an NSF's first layer sees lie outside
# its spline interval [-bound, bound]
SPLINE_OUTSIDE_LIMIT = 0.01


def _column_moments(a):
    """Per-column (mean, std, min, max) in float64 NumPy; NumPy blocks on the host, JAX on device."""
    if isinstance(a, jax.Array):
        return tuple(np.asarray(v, np.float64) for v in
                     (jnp.mean(a, 0), jnp.std(a, 0), jnp.min(a, 0), jnp.max(a, 0)))
    n = a.shape[0]
    total = np.zeros(a.shape[1])
    for s in range(0, n, CHUNK_ROWS):
        total += a[s:s + CHUNK_ROWS].sum(axis=0, dtype=np.float64)
    mean = total / n
    sq = np.zeros(a.shape[1])
    for s in range(0, n, CHUNK_ROWS):
        sq += ((a[s:s + CHUNK_ROWS].astype(np.float64) - mean) ** 2).sum(axis=0)
    return mean, np.sqrt(sq / n), a.min(axis=0).astype(np.float64), a.max(axis=0).astype(np.float64)


def _fraction_outside(a, bound: float) -> float:
    if isinstance(a, jax.Array):
        return float(jnp.mean(jnp.abs(a) > bound))
    count = 0
    for s in range(0, a.shape[0], CHUNK_ROWS):
        count += int(np.count_nonzero(np.abs(a[s:s + CHUNK_ROWS]) > bound))
    return count / max(1, a.size)


def prepare_fit(flow: Flow, data, val_data, loss_fn):
    """What :func:`jaxflows.fit` runs before training (data already checked finite, 2-D).

    - refuses a zero-variance column (``ValueError`` naming it);
    - warns (:class:`RawScaleWarning`) when the values the flow's first layer sees
      are far from zero mean / unit variance (factory and standardised flows), or
      when more than 1% of them lie outside an NSF's spline interval;
    - for a flow from :func:`standardize` with the default loss, standardises the
      data on the host in float64 (JAX arrays on their device) and returns the
      wrapped flow to train, with the same params.

    Returns ``(train_flow, data, val_data, nll_offset)``: ``nll_offset`` is added to
    the inner flow's mean NLL to give the NLL in the data's units.
    """
    inner, std = split_standardization(flow)
    if data.shape[0] >= 2:
        mean, sd, lo, hi = _column_moments(data)
        cols = np.flatnonzero(lo == hi)
        if cols.size:
            raise ValueError(constant_columns_message(np.asarray(data[:1]), cols))
        _warn_scale(flow, inner, std, mean, sd)
    if std is None or loss_fn is not None:
        if data.shape[0] >= 1:
            _warn_spline(flow, data)
        return flow, data, val_data, 0.0

    def to_z(a):
        if a is None:
            return None
        if isinstance(a, jax.Array):
            z = (a - jnp.asarray(std.mean, a.dtype)) / jnp.asarray(std.scale, a.dtype)
            ok = bool(jnp.all(jnp.isfinite(z)))
        else:
            z, bad = host_standardize(np.asarray(a), std, flow_dtype(), "data")
            ok = not bad.any()
        if not ok:
            raise ValueError("data overflow the flow's dtype once standardised (a scale in the "
                             "flow's standardisation is tiny against the data); rebuild it with "
                             "jaxflows.standardize(flow, data) on these data")
        return z

    z = to_z(data)
    _warn_spline(flow, z)
    return inner, z, to_z(val_data), float(np.sum(np.log(std.scale)))


def _warn_scale(flow, inner, std, mean, sd):
    if flow.config is None and std is None:
        return  # a hand-built flow (e.g. with its own logit or affine layer): its business
    if std is not None:  # what the inner flow sees
        mean, sd = (mean - std.mean) / std.scale, sd / std.scale
    lo, hi = STD_LIMITS
    off = (np.abs(mean) > MEAN_LIMIT) | (sd > hi) | (sd < lo)
    if not off.any():
        return
    dev = np.maximum(np.abs(mean) / MEAN_LIMIT, np.maximum(sd / hi, lo / np.maximum(sd, 1e-300)))
    j = int(np.argmax(np.where(off, dev, -np.inf)))
    where = (f"{int(off.sum())} of {off.size} columns, e.g. column {j} with mean {mean[j]:.4g} "
             f"and standard deviation {sd[j]:.4g}")
    if std is None:
        msg = (f"fit: the data look unstandardised ({where}). The flow factories expect roughly "
               "zero mean and unit variance per column; far from that a flow trains slowly or to "
               "a poor optimum. Wrap the flow with its data's statistics, "
               "flow = jaxflows.standardize(flow, data), then params = flow.init(key): the "
               "standardisation becomes a fixed part of the flow, so log-likelihoods, samples and "
               "checkpoints stay in the data's own units.")
    else:
        msg = (f"fit: the data do not match this flow's standardisation ({where} once "
               "standardised): it was fitted to different data. Rebuild it with "
               "jaxflows.standardize(jaxflows.split_standardization(flow)[0], data).")
    warnings.warn(msg, RawScaleWarning, stacklevel=4)


def _warn_spline(flow, z):
    cfg = flow.config
    if not cfg or cfg.get("factory") != "nsf":
        return
    bound = float(cfg.get("kwargs", {}).get("bound", 3.0))
    frac = _fraction_outside(z, bound)
    if frac <= SPLINE_OUTSIDE_LIMIT:
        return
    std = split_standardization(flow)[1]
    fix = ("build the NSF with a larger bound=" if std is not None else
           "standardise the data (flow = jaxflows.standardize(flow, data)) or build the NSF with "
           "a larger bound=")
    warnings.warn(
        f"fit: {100 * frac:.1f}% of the values this NSF's first layer sees lie outside its "
        f"spline interval [-{bound:g}, {bound:g}], where its splines are the identity, so the "
        f"flow cannot shape them; {fix}.", RawScaleWarning, stacklevel=4)
