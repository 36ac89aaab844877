"""Exact per-row log-likelihoods on the host: :func:`score`.

The number a user ranks or thresholds (anomaly detection, model comparison):
float64 standardisation for flows from :func:`jaxflows.standardize`, ``-inf``
for rows whose density is zero in the flow's arithmetic, never NaN, and a
clear error for NaN rows or params.
"""

from __future__ import annotations

import jax
import numpy as np

from .flows import Flow
from .standardizing import flow_dtype, host_standardize, jitted_log_prob, split_standardization

__all__ = ["score"]


def score(flow: Flow, params, x, context=None, *, batch_size: int = 4096) -> np.ndarray:
    """Log-likelihood ``log p(x_i)`` of every row of ``x: (n, dim)``, as float64 NumPy ``(n,)``.

    The number a user ranks or thresholds (anomaly detection, model
    comparison), computed so that it can be trusted:

    - a flow from :func:`standardize` standardises in float64 on the host and
      only then casts to the flow's dtype (a column ``1e8 + N(0, 1)`` keeps
      its noise); the log-Jacobian is added in float64;
    - rows with a +-Inf entry, and finite rows whose values overflow the
      flow's dtype (e.g. ``1e39`` in float32, once standardised), or overflow
      inside the flow's arithmetic (a NaN from ``inf - inf`` near ``1e38``),
      score ``-inf``: the density there is zero in the flow's arithmetic.
      Scores are never NaN, so sorting them ascending (``np.argsort``) puts
      these rows first among anomalies;
    - params holding NaN/Inf are refused (``ValueError``): scores from them
      would be meaningless;
    - a row with a NaN entry has no density: ``ValueError`` naming the first
      such row (0-based) and the count.

    Rows are evaluated in jitted blocks of ``batch_size`` (the last block is
    padded, so one shape compiles once).  ``context: (n, context_dim)`` for
    conditional flows.
    """
    a, context = _checked_rows(flow, x, context, batch_size)
    _check_finite_params(params)
    inner, std = split_standardization(flow)
    dtype = flow_dtype()
    z, bad = host_standardize(a, std, dtype, "x")
    log_det = 0.0 if std is None else -float(np.sum(np.log(std.scale)))
    out = np.full(a.shape[0], -np.inf)
    if a.shape[0] == 0:
        return out
    out[:] = _blocked_log_prob(jitted_log_prob(inner.log_prob), params, z, context, batch_size,
                               dtype) + log_det
    # finite params and finite inputs: a NaN can only come from arithmetic that overflowed
    # (inf - inf, 0 * inf) far out in the tails, where the density is zero in the flow's dtype
    out[bad | np.isnan(out)] = -np.inf
    return out


def _checked_rows(flow: Flow, x, context, batch_size):
    """``(x, context)`` as NumPy arrays of ``n`` rows each, NaN rows refused."""
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be a jaxflows Flow, got {type(flow).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    a = np.asarray(x)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"x must be a real numeric array, got dtype {a.dtype}")
    if a.ndim != 2 or a.shape[1] != flow.dim:
        raise ValueError(f"x must have shape (n, {flow.dim}), got shape {a.shape}")
    n = a.shape[0]
    if context is not None:
        context = np.asarray(context)
        if context.ndim != 2 or context.shape[0] != n:
            raise ValueError(f"context must have shape ({n}, context_dim), one row per row of x, "
                             f"got shape {context.shape}")
    nan_rows = np.flatnonzero(np.isnan(a).any(axis=1)) if np.issubdtype(a.dtype, np.floating) \
        else np.zeros(0, np.int64)
    if nan_rows.size:
        raise ValueError(f"x has NaN in {nan_rows.size} row{'s' if nan_rows.size > 1 else ''} "
                         f"(first: row {nan_rows[0]}, 0-based); a NaN has no density: remove or "
                         "impute those rows")
    return a, context


def _check_finite_params(params) -> None:
    leaves = [np.asarray(v) for v in jax.tree_util.tree_leaves(params)]
    if not all(np.all(np.isfinite(v)) for v in leaves if np.issubdtype(v.dtype, np.inexact)):
        raise ValueError("params hold NaN or Inf values, so every score would be meaningless; "
                         "use the params of a finished fit (the best params it returned)")


def _blocked_log_prob(log_prob, params, z: np.ndarray, context, batch_size: int, dtype) -> np.ndarray:
    """``log_prob`` over the rows of ``z`` in blocks of ``batch_size`` (the last one padded
    with its first row: one shape, one compile), as float64."""
    n = z.shape[0]
    chunk = min(int(batch_size), n)
    out = np.empty(n)
    for start in range(0, n, chunk):
        block = z[start:start + chunk]
        ctx = None if context is None else context[start:start + chunk].astype(dtype)
        m = block.shape[0]
        if m < chunk:
            block = np.concatenate([block, np.repeat(block[:1], chunk - m, axis=0)])
            if ctx is not None:
                ctx = np.concatenate([ctx, np.repeat(ctx[:1], chunk - m, axis=0)])
        out[start:start + m] = np.asarray(log_prob(params, block, ctx), np.float64)[:m]
    return out
