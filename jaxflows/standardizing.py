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
(float32 spacing at ``1e8`` is 8).  :func:`jaxflows.fit` and :func:`~jaxflows.score`
use that path (fit's checks of raw-scale data are in :mod:`jaxflows.raw_scale`); a
float32 JAX array has already lost those digits before the flow sees it.

Scores.  :func:`~jaxflows.score` (in :mod:`jaxflows.scoring`) gives ``-inf``
(density zero in the flow's arithmetic) for rows with ``+-Inf`` entries and for
finite rows whose standardised values overflow the flow's dtype, and refuses
NaN rows, naming the first one.
"""

from __future__ import annotations

import functools
import importlib
import weakref
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_batch
from ._types import Bijector
from .bijectors.standardize import check_affine_constants, fixed_affine
from .data import Standardizer, fit_standardizer
from .flows import Flow

__all__ = ["RawScaleWarning", "score", "split_standardization", "standardize"]

CHUNK_ROWS = 65536  # rows per host-side float64 block (bounds the float64 temporaries)


class RawScaleWarning(UserWarning):
    """``fit`` was given data far from zero mean / unit variance for its flow,
    or data outside a spline flow's bound (filter with ``warnings``)."""


# outer log_prob function -> (inner flow, Standardizer); functions are unique per wrapped flow
_WRAPPED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def flow_dtype():
    """The float dtype the flow computes in: float32 unless JAX's x64 mode is on."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


@functools.lru_cache(maxsize=32)
def jitted_log_prob(log_prob):
    """``jax.jit(log_prob)``, compiled once per function (host-side scoring reuses it)."""
    return jax.jit(log_prob)


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
    the flow's dtype, is ``-inf``; NaN rows give NaN (:func:`jaxflows.score` refuses them).

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
    log_det = -float(np.sum(np.log(scale)))  # log|dz/dx|
    to_base_units = _base_units_map(std, inner.dim)

    def to_data_units(z):
        return z * scale.astype(z.dtype) + shift.astype(z.dtype)

    def log_prob(params, x, context=None):
        host = isinstance(x, (np.ndarray, list, tuple))
        z, bad = to_base_units(x)
        # host data are outside any jit by construction: evaluate the flow compiled
        lp = (jitted_log_prob(inner.log_prob) if host else inner.log_prob)(params, z, context)
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

    config = None
    if inner.config is not None:
        config = dict(inner.config)
        config["standardize"] = {"shift": [float(v) for v in shift],
                                 "scale": [float(v) for v in scale]}
    outer = inner._replace(log_prob=log_prob, sample=sample, sample_and_log_prob=sample_and_log_prob,
                           to_latent=to_latent, from_latent=from_latent,
                           bijector=_then_affine(inner.bijector, fixed_affine(shift, scale)),
                           config=config,
                           train_log_prob=_train_log_prob(inner.train_log_prob, to_base_units, log_det))
    _WRAPPED[log_prob] = (inner, Standardizer(mean=shift.copy(), scale=scale.copy()))
    return outer


def _base_units_map(std: Standardizer, dim: int):
    """``to_base_units(x, replace_bad=True) -> (z, bad)``: z = (x - shift) / scale in the
    flow's dtype (float64 on the host for NumPy input), ``bad`` the rows with +-Inf (or
    overflowing) values, set to 0 in ``z`` when ``replace_bad`` so that nothing downstream
    sees them."""
    shift, scale = std.mean, std.scale

    def to_base_units(x, replace_bad=True):
        if isinstance(x, (np.ndarray, list, tuple)):
            z, bad = host_standardize(np.asarray(x), std, flow_dtype(), "x", zero_bad=replace_bad)
            return jnp.asarray(z), jnp.asarray(bad)
        x = check_batch(x, dim, "x")
        z = (x - shift.astype(x.dtype)) / scale.astype(x.dtype)
        bad = jnp.any(jnp.isinf(z), axis=-1)
        if replace_bad:
            z = jnp.where(bad[..., None], jnp.zeros((), z.dtype), z)
        return z, bad

    return to_base_units


def _then_affine(bijector: Bijector, affine: Bijector) -> Bijector:
    """``bijector`` (z -> y) followed by the fixed ``affine`` map (y -> x), same params."""

    def forward(params, z, context=None):
        y, ld = bijector.forward(params, z, context)
        x, ld_affine = affine.forward({}, y)
        return x, ld + ld_affine

    def inverse(params, x, context=None):
        y, ld_affine = affine.inverse({}, x)
        z, ld = bijector.inverse(params, y, context)
        return z, ld + ld_affine

    return Bijector(bijector.init, forward, inverse)


def _train_log_prob(inner_train_log_prob, to_base_units, log_det: float):
    """The batch-norm training density of the standardised flow (``None`` without one)."""
    if inner_train_log_prob is None:
        return None

    def train_log_prob(params, x, context=None):
        z, bad = to_base_units(x)
        lp, new_params = inner_train_log_prob(params, z, context)
        lp = jnp.where(bad, -jnp.inf, lp + jnp.asarray(log_det, lp.dtype))
        return lp, new_params

    return train_log_prob


def host_standardize(x: np.ndarray, std: Optional[Standardizer], dtype, name: str,
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
    for start in range(0, flat.shape[0], CHUNK_ROWS):
        block = flat[start:start + CHUNK_ROWS].astype(np.float64)
        if std is not None:
            block = (block - std.mean) / std.scale
        b = np.any(np.isinf(block) | (np.abs(block) > big), axis=1)
        if zero_bad and b.any():
            block[b] = 0.0
        bad[start:start + CHUNK_ROWS] = b
        with np.errstate(over="ignore"):
            out[start:start + block.shape[0]] = block
    return out.reshape(x.shape), bad.reshape(x.shape[:-1])


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


def __getattr__(name: str):
    """``jaxflows.standardizing.score`` and ``prepare_fit``, defined in :mod:`jaxflows.scoring`
    and :mod:`jaxflows.raw_scale` (which import this module), read on first use."""
    moved = {"score": "jaxflows.scoring", "prepare_fit": "jaxflows.raw_scale"}
    if name in moved:
        return getattr(importlib.import_module(moved[name]), name)
    raise AttributeError(f"module 'jaxflows.standardizing' has no attribute {name!r}")
