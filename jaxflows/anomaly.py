"""Calibrated anomaly detection: conformal p-values from held-out log-densities.

A density model gives every row a score ``s(x) = log p(x)``; low is unusual.
A raw log-density has no scale a user can act on ("is -87 nats bad?"), and a
threshold taken from the *training* rows flags far too many new rows (a
flexible model scores the rows it was fitted to higher than new ones).
Conformal prediction (Vovk, Gammerman & Shafer 2005; for anomalies see
Laxhammar & Falkman 2015, Bates et al. 2023 "Testing for outliers with
conformal p-values") turns scores into calibrated p-values using ``n``
held-out *calibration* rows that the model never saw:

    p(x) = (1 + #{i : s_i <= s(x)}) / (n + 1),

the rank of the new row's score among the calibration scores ``s_1..s_n``.
If the new row and the calibration rows are exchangeable (drawn from the same
distribution, independently of the model's training), then for every level
``alpha``

    P(p(x) <= alpha) = floor(alpha (n + 1)) / (n + 1) <= alpha

(exactly, when scores have no ties), whatever the model and however badly it
fits: a poor model only costs detection power, never the false-alarm
guarantee.  Flagging ``p(x) <= alpha`` is the same as flagging
``s(x) < threshold(calibration, alpha)``, the ``k``-th smallest calibration
score with ``k = floor(alpha (n + 1))``; so the rule can be applied to new
data with one comparison.  The guarantee holds on average over calibration
sets; for one fixed calibration set the realised false-alarm rate is
``Beta(k, n + 1 - k)``-distributed around ``k / (n + 1)`` (standard
deviation about ``sqrt(alpha / n)``), so use a few hundred calibration rows
or more for small ``alpha``.

The score need not be a log-density: any "higher is more normal" score works
(the isolation-forest ``score_samples`` of scikit-learn, a Gaussian
log-density, ...), which makes different detectors comparable at the same
false-alarm rate.

All functions are pure and jit-friendly (sorting and ``searchsorted``):
JAX arrays in, JAX arrays out, under ``jit`` and ``vmap`` too; NumPy (or
lists) in, NumPy out, in float64 (log-likelihoods from ``jaxflows.score``
keep their precision).  Argument checks that need concrete values (no NaN
scores, a rate in ``(0, 1)``) run only outside ``jit``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from ._types import Array

__all__ = ["Calibration", "calibrate", "p_values", "threshold", "flag",
           "expected_false_alarm_rate"]


class Calibration(NamedTuple):
    """Sorted calibration scores ``(n,)`` (ascending); a plain pytree (jit it, save it)."""

    scores: Array

    @property
    def size(self) -> int:
        return int(self.scores.shape[0])


def _concrete(a) -> bool:
    return not isinstance(a, jax.core.Tracer)


def _as_scores(a, name: str):
    """NumPy float64 for host input, a JAX float array for JAX input."""
    if isinstance(a, (bool, np.bool_)):
        raise TypeError(f"{name} must be an array of scores (log-densities), got a bool")
    is_jax = isinstance(a, jax.Array)
    arr = a if is_jax else np.asarray(a)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers (log-densities), got dtype {arr.dtype}")
    if not is_jax:
        return arr.astype(np.float64)
    return arr if jnp.issubdtype(arr.dtype, jnp.floating) else arr.astype(jnp.result_type(float))


def _check_nan(s, name: str, what: str) -> None:
    if _concrete(s):
        bad = np.flatnonzero(np.isnan(np.asarray(s)).reshape(-1))
        if bad.size:
            raise ValueError(f"{name} are NaN at {bad.size} {what} (first: {bad[:5].tolist()}); "
                             "a NaN log-density has no rank: check the model and the rows")


def calibrate(calibration_scores) -> Calibration:
    """Sort held-out scores ``(n,)`` (for example ``flow.log_prob`` of rows the
    model was not trained on) into a :class:`Calibration`.

    ``-inf`` is allowed (a row the model gives zero density); NaN is not:
    outside ``jit`` a NaN raises ``ValueError`` naming the rows.
    """
    if isinstance(calibration_scores, Calibration):
        return calibration_scores
    s = _as_scores(calibration_scores, "calibration_scores")
    if s.ndim != 1 or s.shape[0] < 1:
        raise ValueError(f"calibration_scores must have shape (n,) with n >= 1, got {tuple(s.shape)}")
    _check_nan(s, "calibration_scores", "rows")
    return Calibration(jnp.sort(s) if isinstance(s, jax.Array) else np.sort(s))


def _check_rate(rate, name: str = "false_alarm_rate"):
    if isinstance(rate, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number in (0, 1), got a bool")
    if _concrete(rate):
        try:
            r = float(np.asarray(rate))
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number in (0, 1), got {rate!r}") from None
        if not 0.0 < r < 1.0:
            raise ValueError(f"{name} must be in (0, 1), got {r!r}")
    return rate


def _rank(rate, n: int):
    """``k = floor(rate (n + 1))`` clipped to ``[0, n]``, robust to ``rate (n + 1)``
    landing a rounding error below an integer (0.05 * 320 in float32)."""
    if _concrete(rate):
        return min(max(math.floor(float(np.asarray(rate)) * (n + 1) + 1e-9), 0), n)
    r = jnp.asarray(rate)
    r = r.astype(jnp.promote_types(r.dtype, jnp.float32))
    k = jnp.floor(r * (n + 1) * (1 + 4 * jnp.finfo(r.dtype).eps))
    return jnp.clip(k, 0, n).astype(jnp.int32)


def _pair(cal: Calibration, s):
    """Calibration scores and scores in one array library and one dtype."""
    c = cal.scores
    if isinstance(c, jax.Array) or isinstance(s, jax.Array):
        dt = jnp.promote_types(jnp.asarray(s).dtype, jnp.asarray(c).dtype)
        return jnp, jnp.asarray(c).astype(dt), jnp.asarray(s).astype(dt)
    return np, np.asarray(c, np.float64), s


def p_values(calibration: Union[Calibration, Array], scores, *, key: Optional[Array] = None):
    """Conformal p-values of ``scores`` (any shape) against ``calibration``.

    ``p = (1 + #{calibration <= score}) / (n + 1)`` in ``[1/(n+1), 1]``; small
    means unusual.  With ``key`` the tie-randomised ("smoothed") version
    ``p = (#{calibration < score} + U (1 + #{calibration == score})) / (n + 1)``,
    ``U ~ Uniform(0, 1)`` per score, which is exactly ``Uniform(0, 1)`` on
    exchangeable data (the plain version is uniform on ``{1/(n+1), ..., 1}``).

    ``calibration`` is a :class:`Calibration` or raw calibration scores
    ``(n,)`` (sorted here).  A NaN score gets a NaN p-value under ``jit``;
    outside ``jit`` it raises ``ValueError``.
    """
    cal = calibrate(calibration)
    s = _as_scores(scores, "scores")
    _check_nan(s, "scores", "entries (flat indices)")
    xp, c, s = _pair(cal, s)
    n = c.shape[0]
    le = xp.searchsorted(c, s, side="right")  # #{calibration <= s}
    if key is None:
        p = (1.0 + le) / (n + 1.0)
    else:
        lt = xp.searchsorted(c, s, side="left")  # #{calibration < s}
        u = jax.random.uniform(key, np.shape(s), dtype=jnp.result_type(float))
        u = u.astype(s.dtype) if xp is jnp else np.asarray(u, np.float64)
        p = (lt + u * (1.0 + le - lt)) / (n + 1.0)
    return xp.where(xp.isnan(s), np.nan, p).astype(s.dtype)


def threshold(calibration: Union[Calibration, Array], false_alarm_rate: float):
    """The score below which a row is flagged at ``false_alarm_rate`` (a scalar).

    ``flag(score) = score < threshold`` is the same rule as
    ``p_value(score) <= false_alarm_rate``; on exchangeable normal rows it
    flags a fraction ``k / (n + 1) <= false_alarm_rate`` in expectation,
    ``k = floor(false_alarm_rate (n + 1))``.  It is the ``k``-th smallest
    calibration score, or ``-inf`` when ``k = 0`` (fewer than
    ``1 / false_alarm_rate - 1`` calibration rows: nothing can be flagged
    at that rate; :func:`expected_false_alarm_rate` is 0 then).
    """
    cal = calibrate(calibration)
    rate = _check_rate(false_alarm_rate)
    c = cal.scores
    k = _rank(rate, c.shape[0])
    if not isinstance(k, int) or isinstance(c, jax.Array):
        c = jnp.asarray(c)
        return jnp.where(k == 0, -jnp.inf, c[jnp.maximum(k - 1, 0)])
    return np.float64(-np.inf) if k == 0 else np.float64(c[k - 1])


def expected_false_alarm_rate(calibration: Union[Calibration, Array], false_alarm_rate: float):
    """The rate the rule of :func:`threshold` has on exchangeable normal rows (on
    average over calibration sets): ``floor(false_alarm_rate (n + 1)) / (n + 1)``."""
    cal = calibrate(calibration)
    rate = _check_rate(false_alarm_rate)
    n = cal.scores.shape[0]
    return _rank(rate, n) / (n + 1.0)


def flag(calibration: Union[Calibration, Array], scores, false_alarm_rate: float):
    """Boolean flags ``scores < threshold(calibration, false_alarm_rate)`` (same shape as ``scores``).

    Inside ``jit`` a NaN score is flagged (a model failure is worth a look);
    outside ``jit`` it raises ``ValueError``.
    """
    s = _as_scores(scores, "scores")
    _check_nan(s, "scores", "entries (flat indices)")
    t = threshold(calibration, false_alarm_rate)
    if isinstance(t, jax.Array) and not isinstance(s, jax.Array):
        s = jnp.asarray(s)
    return ~(s >= t)
