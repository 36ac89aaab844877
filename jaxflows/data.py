"""Datasets and data files: toy densities, a bundled real dataset, loaders,
standardisation, splits and units.

Everything here is a pure function of its arguments (randomness comes from an
explicit seed or key) and works on the host with NumPy; only the
standardisation helpers also accept JAX arrays and run under ``jit``.

- Toy 2-D densities generated in the package: :func:`two_moons`,
  :func:`checkerboard`.
- A real dataset shipped inside scikit-learn (no download): :func:`digits`.
- User files: :func:`load_array` reads ``.npy``, ``.npz`` and delimited text
  (``.csv``, ``.tsv``, ``.txt``, ``.dat``) into a float ``(n, d)`` array and
  raises one clear sentence naming the file on any problem (defined in
  :mod:`jaxflows.loading` with :func:`column_names` and :class:`DataWarning`,
  re-exported here); :func:`check_finite` rejects NaN/Inf rows of any array.
- :class:`Standardizer`: ``z = (x - mean) / scale`` column-wise, with the
  log-Jacobian that puts log-likelihoods back in the user's units.
- :func:`split` (deterministic train/validation/test) and :func:`bits_per_dim`.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from ._optional import require
# reading files lives in jaxflows.loading; its public names stay importable from here
from .loading import Columns, DataWarning, PathLike, column_names, load_array  # noqa: F401


# --------------------------------------------------------------------------
# Randomness on the host
# --------------------------------------------------------------------------

def _rng(key_or_seed) -> np.random.Generator:
    """A fresh NumPy generator from an int seed or a JAX PRNG key.

    A JAX key (typed ``jax.random.key`` or raw ``uint32`` from
    ``jax.random.PRNGKey``) seeds NumPy with its key data, so the same key
    always gives the same draw (the stream is NumPy's, not ``jax.random``'s).
    """
    if isinstance(key_or_seed, (bool, np.bool_)):
        raise TypeError("key_or_seed must be an int seed or a JAX PRNG key, got a bool.")
    if isinstance(key_or_seed, (int, np.integer)):
        if key_or_seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {key_or_seed}.")
        return np.random.default_rng(int(key_or_seed))
    if isinstance(key_or_seed, (jax.Array, np.ndarray)):
        key = key_or_seed
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)
        data = np.asarray(key)
        if data.dtype == np.uint32 and data.ndim == 1 and data.size >= 1:
            return np.random.default_rng([int(v) for v in data])
    raise TypeError(
        "key_or_seed must be an int seed or a single JAX PRNG key, got "
        f"{type(key_or_seed).__name__}"
        + (f" of shape {tuple(key_or_seed.shape)} and dtype {key_or_seed.dtype}"
           if hasattr(key_or_seed, "shape") else "") + ".")


def _check_count(n, name: str = "n") -> int:
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}.")
    return int(n)


# --------------------------------------------------------------------------
# Toy 2-D densities
# --------------------------------------------------------------------------

def two_moons(key_or_seed, n: int, noise: float = 0.1) -> np.ndarray:
    """Two interleaved half circles with Gaussian noise: a 2-D non-Gaussian density.

    Each point picks a moon with probability 1/2 (exactly ``ceil(n/2)`` outer
    and ``floor(n/2)`` inner points, rows shuffled) and an angle
    ``t ~ U[0, pi]``:

    - outer moon: ``(cos t, sin t)``
    - inner moon: ``(1 - cos t, 1/2 - sin t)``

    then adds ``noise * N(0, I_2)``. Same shape as scikit-learn's
    ``make_moons`` but with random (not evenly spaced) angles, so rows are
    i.i.d. and any split of them is a fair train/test split.

    Args:
      key_or_seed: an int seed or a JAX PRNG key; the output is a
        deterministic function of it.
      n: number of points (>= 1).
      noise: standard deviation of the Gaussian noise (>= 0).

    Returns:
      float32 array ``(n, 2)``.
    """
    n = _check_count(n)
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}.")
    rng = _rng(key_or_seed)
    n_outer = n - n // 2
    t = rng.uniform(0.0, np.pi, size=n)
    outer = np.stack([np.cos(t[:n_outer]), np.sin(t[:n_outer])], axis=1)
    inner = np.stack([1.0 - np.cos(t[n_outer:]), 0.5 - np.sin(t[n_outer:])], axis=1)
    x = np.concatenate([outer, inner], axis=0)
    x = x + noise * rng.standard_normal(size=(n, 2))
    return x[rng.permutation(n)].astype(np.float32)


def checkerboard(key_or_seed, n: int) -> np.ndarray:
    """Uniform density on the 8 "black" unit squares of a 4x4 board on ``[-2, 2]^2``.

    A point ``(x, y)`` has density 1/8 where ``floor(x) + floor(y)`` is even
    and 0 elsewhere: a discontinuous, multi-modal 2-D density (the FFJORD /
    neural-spline-flow "checkerboard" toy, halved in scale).

    Args:
      key_or_seed: an int seed or a JAX PRNG key.
      n: number of points (>= 1).

    Returns:
      float32 array ``(n, 2)``; its exact log-density is ``log(1/8)`` on the support.
    """
    n = _check_count(n)
    rng = _rng(key_or_seed)
    x = rng.uniform(-2.0, 2.0, size=n)
    # Within column floor(x), the black rows are those with the same parity.
    parity = np.floor(x).astype(np.int64) % 2
    row = 2 * rng.integers(0, 2, size=n) + parity - 2  # in {-2, -1, 0, 1}
    y = row + rng.uniform(0.0, 1.0, size=n)
    return np.stack([x, y], axis=1).astype(np.float32)


# --------------------------------------------------------------------------
# A real dataset that ships with a dependency
# --------------------------------------------------------------------------

def digits(seed: int = 0, dequantize: bool = True) -> np.ndarray:
    """scikit-learn's bundled handwritten digits, ``(1797, 64)``, as a density-estimation set.

    Each row is an 8x8 image whose pixels are integers ``0..16`` (UCI
    optical-recognition digits; shipped inside the scikit-learn wheel, no
    download). With ``dequantize=True`` each pixel becomes ``x + u`` with
    ``u ~ U[0, 1)`` drawn from ``seed``: a continuous density ``p`` on the
    dequantised data lower-bounds the discrete model,
    ``log P(x) >= E_u[log p(x + u)]`` (unit-width bins, so no extra term
    in nats or bits/dim).

    Args:
      seed: seed of the dequantisation noise (the images are fixed).
      dequantize: add the uniform noise (``True``) or return the integers as float32.

    Returns:
      float32 array ``(1797, 64)`` with values in ``[0, 17)``.
    """
    datasets = require("sklearn.datasets", "jaxflows.data.digits (scikit-learn's bundled digits)")
    x = np.asarray(datasets.load_digits().data, dtype=np.float64)
    return uniform_dequantize(x, seed) if dequantize else x.astype(np.float32)


def uniform_dequantize(x, key_or_seed) -> np.ndarray:
    """``x + u`` with ``u ~ U[0, 1)`` per entry (drawn from ``key_or_seed``), float32.

    For integer-valued data (pixels ``0..255``): a continuous density on the
    result lower-bounds the discrete model's log-likelihood,
    ``log P(x) >= E_u[log p(x + u)]`` (unit bins, no extra term).  Follow with
    ``jaxflows.bijectors.logit(dim, scale=256)`` for images and report
    ``bits_per_dim``.
    """
    x = np.asarray(x, dtype=np.float64)
    return (x + _rng(key_or_seed).uniform(0.0, 1.0, size=x.shape)).astype(np.float32)


# --------------------------------------------------------------------------
# Finite checks
# --------------------------------------------------------------------------

def _nonfinite_rows(x: np.ndarray) -> np.ndarray:
    """Indices of the rows of a 1-D or 2-D array holding NaN or +-Inf."""
    bad = ~np.isfinite(x)
    if bad.ndim > 1:
        bad = bad.reshape(bad.shape[0], -1).any(axis=1)
    return np.flatnonzero(bad)


def check_finite(x, name: str = "data"):
    """Raise ``ValueError`` if any row of ``x`` holds NaN or Inf; return ``x`` unchanged.

    The message names ``name``, counts the bad rows and gives the first
    one's 0-based index, e.g. ``"data has 3 rows with NaN or Inf values
    (first: row 17); remove or impute them."``. Runs on the host (call it
    outside ``jit``).

    Args:
      x: array ``(n, ...)``, NumPy or JAX.
      name: what to call ``x`` in the message (a file name, an argument name).
    """
    arr = np.asarray(x)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}.")
    rows = _nonfinite_rows(arr)
    if rows.size:
        raise ValueError(
            f"{name} has {rows.size} {'row' if rows.size == 1 else 'rows'} with NaN or "
            f"Inf values (first: row {rows[0]}, 0-based); remove or impute them.")
    return x


# --------------------------------------------------------------------------
# Standardisation
# --------------------------------------------------------------------------

class Standardizer(NamedTuple):
    """Column-wise affine standardisation ``z = (x - mean) / scale``.

    Fields (arrays ``(d,)``): ``mean`` and ``scale`` (> 0). A plain pytree:
    pass it to jitted functions or store it in a checkpoint. If a flow gives
    ``log q(z)`` for standardised data, the density in the user's units is
    ``log p(x) = log q(z) + standardizer_log_det(s)`` with
    ``standardizer_log_det(s) = -sum_j log scale_j``.
    """

    mean: np.ndarray
    scale: np.ndarray


def constant_columns(x) -> np.ndarray:
    """0-based indices of the columns of ``x: (n, d)`` whose values are all equal.

    A continuous density on such a column is a point mass: its likelihood grows
    without bound as a flow narrows it, so a fit on it never converges.
    """
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"expected data of shape (n, d), got shape {arr.shape}.")
    if arr.shape[0] == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(arr.min(axis=0) == arr.max(axis=0))


def constant_columns_message(x, cols, name: str = "data") -> str:
    """The error for zero-variance columns ``cols`` of ``x`` (names them, says what to do)."""
    cols = np.asarray(cols)
    first = np.asarray(x)[0, cols[0]].item()
    which = (f"column {cols[0]}" if cols.size == 1 else
             f"{cols.size} columns ({', '.join(str(int(c)) for c in cols[:8])}"
             f"{', ...' if cols.size > 8 else ''})")
    return (f"{name} has zero variance in {which} (0-based; column {cols[0]} is {first!r} in "
            "every row): a density on a constant column is a point mass whose likelihood grows "
            "without bound, so no flow can be fitted to it; drop the column (or dequantise "
            "integer data with jaxflows.data.uniform_dequantize).")


def fit_standardizer(x) -> Standardizer:
    """Per-column mean and standard deviation of ``x: (n, d)``.

    Computed in float64 on the host; the fields are float64 NumPy arrays
    ``(d,)``. Raises ``ValueError`` for non-2-D, empty or non-finite data, and
    for a column with zero variance (all rows equal), naming it: such a column
    has no density to fit (see :func:`constant_columns`), so drop it first.
    """
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"fit_standardizer expects data of shape (n, d) with n, d >= 1, "
                         f"got shape {arr.shape}.")
    check_finite(arr, "data given to fit_standardizer")
    cols = constant_columns(arr)
    if cols.size:
        raise ValueError(constant_columns_message(arr, cols))
    arr = arr.astype(np.float64)
    mean = arr.mean(axis=0)
    scale = arr.std(axis=0)
    tiny = np.flatnonzero(~(scale > 0))  # not constant, yet the spread underflows float64
    if tiny.size:
        raise ValueError(f"column {tiny[0]} of the data has a standard deviation that underflows "
                         "float64; rescale or drop it.")
    return Standardizer(mean=mean, scale=scale)


def _check_dim(s: Standardizer, x, fn: str) -> None:
    d = np.shape(s.mean)[-1] if np.ndim(s.mean) else 1
    if np.ndim(x) == 0 or np.shape(x)[-1] != d:
        raise ValueError(f"{fn} expects an array of shape (..., {d}) for this Standardizer, "
                         f"got shape {tuple(np.shape(x))}.")


def _float_dtype(x):
    return np.promote_types(x.dtype, np.float32)


def standardize(s: Standardizer, x):
    """``z = (x - mean) / scale`` for ``x: (..., d)``; NumPy in, NumPy out; JAX and
    ``jit`` work too. The result has ``x``'s float dtype."""
    _check_dim(s, x, "standardize")
    dt = _float_dtype(x)
    return (x.astype(dt) - s.mean.astype(dt)) / s.scale.astype(dt)


def unstandardize(s: Standardizer, z):
    """``x = z * scale + mean`` for ``z: (..., d)``: the inverse of :func:`standardize`."""
    _check_dim(s, z, "unstandardize")
    dt = _float_dtype(z)
    return z.astype(dt) * s.scale.astype(dt) + s.mean.astype(dt)


def standardizer_log_det(s: Standardizer):
    """``log|dz/dx| = -sum_j log scale_j``, a scalar ``()``.

    Add it to log-likelihoods of standardised data to get log-likelihoods in
    the data's own units: ``log p(x) = log q((x - mean) / scale) + this``.
    """
    xp = np if isinstance(s.scale, np.ndarray) else jnp
    return -xp.sum(xp.log(s.scale))


# --------------------------------------------------------------------------
# Splits and units
# --------------------------------------------------------------------------

def split(x, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Tuple:
    """Shuffle the rows of ``x`` (deterministically from ``seed``) and cut them
    into ``len(fractions)`` parts, by default train / validation / test.

    Part ``k`` gets rows ``[round(n * c_{k-1}), round(n * c_k))`` of the
    permutation, where ``c_k`` is the cumulative sum of ``fractions``, so
    sizes add up to ``n`` exactly. ``x`` may be NumPy or JAX ``(n, ...)``.

    Raises ``ValueError`` if the fractions are negative, do not sum to 1, or
    leave a part with a positive fraction empty.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.ndim != 1 or fr.size == 0 or np.any(~np.isfinite(fr)) or np.any(fr < 0) \
            or not math.isclose(fr.sum(), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must be non-negative numbers summing to 1, "
                         f"got {tuple(fractions)}.")
    if np.ndim(x) == 0:
        raise ValueError("split expects an array of shape (n, ...), got a scalar.")
    n = np.shape(x)[0]
    bounds = np.round(np.concatenate([[0.0], np.cumsum(fr)]) * n).astype(np.int64)
    bounds[-1] = n
    sizes = np.diff(bounds)
    if np.any((sizes == 0) & (fr > 0)):
        raise ValueError(f"split of {n} rows with fractions {tuple(fractions)} leaves "
                         f"a part empty (sizes {tuple(int(v) for v in sizes)}); "
                         "use more rows or larger fractions.")
    perm = _rng(seed).permutation(n)
    return tuple(x[perm[a:b]] for a, b in zip(bounds[:-1], bounds[1:]))


def bits_per_dim(log_likelihood_nats, dim: int):
    """Average negative log-likelihood in bits per dimension:
    ``-log_likelihood / (dim * ln 2)``.

    ``log_likelihood_nats`` is a per-example log-likelihood (scalar or array)
    of a ``dim``-dimensional density, in nats and in the data's own units
    (include :func:`standardizer_log_det` if the model saw standardised data).
    For dequantised integer data with unit-width bins (such as :func:`digits`)
    this bounds the discrete code length.
    """
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}.")
    return -log_likelihood_nats / (dim * math.log(2.0))
