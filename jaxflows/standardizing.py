"""Raw-scale data: standardisation inside the flow, and exact per-row scores.

Every flow factory (:func:`~jaxflows.maf`, :func:`~jaxflows.iaf`,
:func:`~jaxflows.realnvp`, :func:`~jaxflows.nsf`) is built for data of roughly
zero mean and unit variance per column: its layers start at the identity, its
scale floors are absolute and a spline acts on ``[-bound, bound]``.
:func:`standardize` puts the map ``z = (x - mean) / std`` *inside* the flow as a
fixed (non-trainable) affine bijector fitted to training data::

    flow = jf.standardize(jf.maf(dim), train)        # train in the data's own units
    params = flow.init(key)
    params, history = jf.fit(flow, params, train, key=key)
    ll = jf.score(flow, params, test)                # float64 log p(x) per row, data units

so that

- ``log_prob`` is the density in the data's units: ``log p(x) = log q(z) -
  sum_j log std_j`` (the change-of-variables term is counted);
- ``sample`` / ``from_latent`` return data units;
- the statistics are part of ``flow.config`` (``"standardize": {"shift": [...],
  "scale": [...]}``), so a checkpoint rebuilds the same flow with
  :func:`jaxflows.from_config`; params are exactly the wrapped flow's params.

Precision.  On NumPy input outside ``jit`` the standardisation runs in float64
on the host and only its result is cast to the flow's dtype (float32 unless
JAX's x64 mode is on), so a column such as ``1e8 + N(0, 1)`` keeps its spread
(float32 spacing at ``1e8`` is 8).  :func:`jaxflows.fit` and :func:`score` use
that path; a float32 JAX array has already lost those digits before the flow
sees it.

Scores.  :func:`score` gives ``-inf`` (density zero in the flow's arithmetic)
for rows with ``+-Inf`` entries and for finite rows whose standardised values
overflow the flow's dtype, and refuses NaN rows, naming the first one.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_batch
from .bijectors.standardize import check_affine_constants, fixed_affine
from ._types import Bijector
from .data import Standardizer, constant_columns_message, fit_standardizer
from .flows import Flow

__all__ = ["RawScaleWarning", "score", "split_standardization", "standardize"]

# Column means beyond this, or standard deviations outside these bounds, in what the flow's
# first layer sees, make fit warn (factory flows only; see _check_fit_scale).
MEAN_LIMIT = 5.0
STD_LIMITS = (0.05, 5.0)
# fit warns when more than this fraction of the values an NSF's first layer sees lie outside
# its spline interval [-bound, bound]
SPLINE_OUTSIDE_LIMIT = 0.01
_CHUNK = 65536  # rows per host-side float64 block (bounds the float64 temporaries)


class RawScaleWarning(UserWarning):
    """``fit`` was given data far from zero mean / unit variance for its flow,
    or data outside a spline flow's bound (filter with ``warnings``)."""


# outer log_prob function -> (inner flow, Standardizer); functions are unique per wrapped flow
_WRAPPED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _flow_dtype():
    """The float dtype the flow computes in: float32 unless JAX's x64 mode is on."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def split_standardization(flow: Flow) -> Tuple[Flow, Optional[Standardizer]]:
    """``(inner_flow, Standardizer)`` for a flow built by :func:`standardize`,
    ``(flow, None)`` for any other flow.

    ``inner_flow`` takes the same params and models the standardised data
    ``z = (x - mean) / scale``; use it with the float64 statistics to work
    beyond the flow's dtype, e.g. samples in float64 data units:
    ``jaxflows.data.unstandardize(s, np.asarray(inner.sample(params, key, (n,)), np.float64))``.
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be a jaxflows Flow, got {type(flow).__name__}")
    try:
        found = _WRAPPED.get(flow.log_prob)
    except TypeError:  # an unhashable or non-weakrefable log_prob: not ours
        found = None
    return (flow, None) if found is None else found


def standardize(flow: Flow, data=None, *, shift=None, scale=None) -> Flow:
    """``flow`` with a fixed affine standardisation on its data side.

    Either ``data: (n, flow.dim)``, whose per-column mean and standard deviation
    (float64, on the host) become ``shift`` and ``scale``, or explicit ``shift``
    and ``scale`` arrays ``(dim,)`` (finite, ``scale > 0``; this is how
    :func:`jaxflows.from_config` rebuilds a saved flow).  Returns a
    :class:`~jaxflows.Flow` that

    - takes exactly ``flow``'s params (``init`` is ``flow.init``; the statistics
      are constants, not params, so no optimizer moves them);
    - has ``log_prob(params, x) = flow.log_prob(params, (x - shift) / scale) -
      sum_j log scale_j``: the density in ``x``'s units;
    - samples ``x = shift + scale * z`` with ``z`` from ``flow``; ``to_latent`` /
      ``from_latent`` compose the same way, and ``bijector`` is ``flow.bijector``
      followed by :func:`~jaxflows.bijectors.fixed_affine` (so
      ``jaxflows.to_distrax`` sees the whole map);
    - has ``config = {**flow.config, "standardize": {"shift": [...], "scale":
      [...]}}`` (``None`` if ``flow.config`` is ``None``).

    Works with every factory, with a context (the context is passed through
    unchanged) and with batch-norm flows (``train_log_prob`` is wrapped too).
    ``log_prob`` of +-Inf rows, or of rows whose standardised values overflow
    the flow's dtype, is ``-inf``; NaN rows give NaN (:func:`score` refuses them).

    Raises ``ValueError`` for a column of ``data`` with zero variance (naming
    it), non-finite or mis-shaped data, or a flow that is already standardised.
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be a jaxflows Flow, got {type(flow).__name__}")
    if split_standardization(flow)[1] is not None:
        raise ValueError("flow is already standardised; call standardize on the flow it wraps "
                         "(split_standardization(flow)[0]) to standardise with other statistics")
    dim = flow.dim
    if data is not None:
        if shift is not None or scale is not None:
            raise ValueError("pass either data or shift= and scale=, not both")
        arr = np.asarray(data)
        if arr.ndim != 2 or arr.shape[1] != dim or arr.shape[0] < 2:
            raise ValueError(f"data must have shape (n, {dim}) with n >= 2 rows, "
                             f"got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
            raise TypeError(f"data must be a real numeric array, got dtype {arr.dtype}")
        s = fit_standardizer(arr)  # refuses zero-variance columns, naming them
        shift, scale = s.mean, s.scale
    elif shift is None or scale is None:
        raise ValueError("standardize needs data (n, dim), or both shift= and scale=")
    shift, scale = check_affine_constants(shift, scale, dim)
    return _wrap(flow, Standardizer(mean=shift, scale=scale))


def _wrap(inner: Flow, std: Standardizer) -> Flow:
    shift, scale = std.mean, std.scale
    dim = inner.dim
    log_det = -float(np.sum(np.log(scale)))  # log|dz/dx|
    affine = fixed_affine(shift, scale)

    def to_base_units(x, replace_bad=True):
        """``(z, bad)``: z = (x - shift) / scale in the flow's dtype (float64 on the host
        for NumPy input), ``bad`` the rows with +-Inf (or overflowing) values, set to 0 in
        ``z`` when ``replace_bad`` so that nothing downstream sees them."""
        if isinstance(x, (np.ndarray, list, tuple)):
            z, bad = _host_standardize(np.asarray(x), std, _flow_dtype(), "x", zero_bad=replace_bad)
            return jnp.asarray(z), jnp.asarray(bad)
        x = check_batch(x, dim, "x")
        z = (x - shift.astype(x.dtype)) / scale.astype(x.dtype)
        bad = jnp.any(jnp.isinf(z), axis=-1)
        if replace_bad:
            z = jnp.where(bad[..., None], jnp.zeros((), z.dtype), z)
        return z, bad

    def to_data_units(z):
        return z * scale.astype(z.dtype) + shift.astype(z.dtype)

    def log_prob(params, x, context=None):
        host = isinstance(x, (np.ndarray, list, tuple))
        z, bad = to_base_units(x)
        # host data are outside any jit by construction: evaluate the flow compiled
        lp = (_jitted_log_prob(inner.log_prob) if host else inner.log_prob)(params, z, context)
        lp = lp + jnp.asarray(log_det, lp.dtype)
        return jnp.where(bad, jnp.asarray(-jnp.inf, lp.dtype), lp)

    def sample(params, key, sample_shape=(), context=None):
        return to_data_units(inner.sample(params, key, sample_shape, context))

    def sample_and_log_prob(params, key, sample_shape=(), context=None):
        z, lp = inner.sample_and_log_prob(params, key, sample_shape, context)
        return to_data_units(z), lp + jnp.asarray(log_det, lp.dtype)

    def to_latent(params, x, context=None):
        return inner.to_latent(params, to_base_units(x, replace_bad=False)[0], context)

    def from_latent(params, z, context=None):
        return to_data_units(inner.from_latent(params, z, context))

    def forward(params, z, context=None):
        y, ld = inner.bijector.forward(params, z, context)
        x, ld_affine = affine.forward({}, y)
        return x, ld + ld_affine

    def inverse(params, x, context=None):
        y, ld_affine = affine.inverse({}, x)
        z, ld = inner.bijector.inverse(params, y, context)
        return z, ld + ld_affine

    train_log_prob = None
    if inner.train_log_prob is not None:
        def train_log_prob(params, x, context=None):
            z, bad = to_base_units(x)
            lp, new_params = inner.train_log_prob(params, z, context)
            lp = jnp.where(bad, -jnp.inf, lp + jnp.asarray(log_det, lp.dtype))
            return lp, new_params

    config = None
    if inner.config is not None:
        config = dict(inner.config)
        config["standardize"] = {"shift": [float(v) for v in shift],
                                 "scale": [float(v) for v in scale]}
    outer = inner._replace(log_prob=log_prob, sample=sample, sample_and_log_prob=sample_and_log_prob,
                           to_latent=to_latent, from_latent=from_latent,
                           bijector=Bijector(inner.bijector.init, forward, inverse),
                           config=config, train_log_prob=train_log_prob)
    _WRAPPED[log_prob] = (inner, Standardizer(mean=shift.copy(), scale=scale.copy()))
    return outer


def _host_standardize(x: np.ndarray, std: Optional[Standardizer], dtype, name: str,
                      zero_bad: bool = True):
    """``((x - mean) / scale)`` computed in float64 block by block, then cast to ``dtype``;
    returns ``(z, bad)`` with ``bad`` the rows (over the batch shape) holding +-Inf or
    values beyond ``dtype``'s range after standardising (their ``z`` is 0 when
    ``zero_bad``, else the cast's +-Inf)."""
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"{name} must be a real numeric array, got dtype {x.dtype}")
    dim = None if std is None else std.mean.shape[0]
    if x.ndim < 1 or (dim is not None and x.shape[-1] != dim):
        raise ValueError(f"{name} must have shape (..., {dim}), got shape {x.shape}")
    flat = x.reshape((-1, x.shape[-1]))
    out = np.empty(flat.shape, dtype)
    bad = np.zeros(flat.shape[0], bool)
    big = np.finfo(dtype).max
    for start in range(0, flat.shape[0], _CHUNK):
        block = flat[start:start + _CHUNK].astype(np.float64)
        if std is not None:
            block = (block - std.mean) / std.scale
        b = np.any(np.isinf(block) | (np.abs(block) > big), axis=1)
        if zero_bad and b.any():
            block[b] = 0.0
        bad[start:start + _CHUNK] = b
        with np.errstate(over="ignore"):
            out[start:start + block.shape[0]] = block
    return out.reshape(x.shape), bad.reshape(x.shape[:-1])


# --------------------------------------------------------------------------
# score: per-row log-likelihoods on the host
# --------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _jitted_log_prob(log_prob):
    return jax.jit(log_prob)


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
    leaves = [np.asarray(v) for v in jax.tree_util.tree_leaves(params)]
    if not all(np.all(np.isfinite(v)) for v in leaves if np.issubdtype(v.dtype, np.inexact)):
        raise ValueError("params hold NaN or Inf values, so every score would be meaningless; "
                         "use the params of a finished fit (the best params it returned)")
    inner, std = split_standardization(flow)
    dtype = _flow_dtype()
    z, bad = _host_standardize(a, std, dtype, "x")
    log_det = 0.0 if std is None else -float(np.sum(np.log(std.scale)))
    out = np.full(n, -np.inf)
    if n == 0:
        return out
    log_prob = _jitted_log_prob(inner.log_prob)
    chunk = min(int(batch_size), n)
    for start in range(0, n, chunk):
        block = z[start:start + chunk]
        ctx = None if context is None else context[start:start + chunk].astype(dtype)
        m = block.shape[0]
        if m < chunk:  # pad with the first row: one shape, one compile
            block = np.concatenate([block, np.repeat(block[:1], chunk - m, axis=0)])
            if ctx is not None:
                ctx = np.concatenate([ctx, np.repeat(ctx[:1], chunk - m, axis=0)])
        lp = np.asarray(log_prob(params, block, ctx), np.float64)[:m]
        out[start:start + m] = lp + log_det
    # finite params and finite inputs: a NaN can only come from arithmetic that overflowed
    # (inf - inf, 0 * inf) far out in the tails, where the density is zero in the flow's dtype
    out[bad | np.isnan(out)] = -np.inf
    return out


# --------------------------------------------------------------------------
# fit's data checks (called by jaxflows.fit)
# --------------------------------------------------------------------------

def _column_moments(a):
    """Per-column (mean, std, min, max) in float64 NumPy; NumPy blocks on the host, JAX on device."""
    if isinstance(a, jax.Array):
        return tuple(np.asarray(v, np.float64) for v in
                     (jnp.mean(a, 0), jnp.std(a, 0), jnp.min(a, 0), jnp.max(a, 0)))
    n = a.shape[0]
    total = np.zeros(a.shape[1])
    for s in range(0, n, _CHUNK):
        total += a[s:s + _CHUNK].sum(axis=0, dtype=np.float64)
    mean = total / n
    sq = np.zeros(a.shape[1])
    for s in range(0, n, _CHUNK):
        sq += ((a[s:s + _CHUNK].astype(np.float64) - mean) ** 2).sum(axis=0)
    return mean, np.sqrt(sq / n), a.min(axis=0).astype(np.float64), a.max(axis=0).astype(np.float64)


def _fraction_outside(a, bound: float) -> float:
    if isinstance(a, jax.Array):
        return float(jnp.mean(jnp.abs(a) > bound))
    count = 0
    for s in range(0, a.shape[0], _CHUNK):
        count += int(np.count_nonzero(np.abs(a[s:s + _CHUNK]) > bound))
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
            z, bad = _host_standardize(np.asarray(a), std, _flow_dtype(), "data")
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


def check_standardize_config(entry, dim) -> None:
    """Validate a flow config's ``"standardize"`` entry, ``{"shift": [...], "scale":
    [...]}`` with ``dim`` finite numbers each and ``scale > 0`` (``None``: no
    standardisation); ``ValueError`` naming the field otherwise."""
    if entry is None:
        return
    if not isinstance(entry, dict) or set(entry) != {"shift", "scale"}:
        raise ValueError(f"flow config standardize must be {{'shift': [...], 'scale': [...]}}, "
                         f"got {entry!r:.120}")
    for key in ("shift", "scale"):
        v = entry[key]
        if not isinstance(v, list) or len(v) != dim or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) for t in v):
            raise ValueError(f"flow config standardize.{key} must be a list of {dim} numbers "
                             f"(one per dimension), got {v!r:.80}")
    check_affine_constants(entry["shift"], entry["scale"], dim)
