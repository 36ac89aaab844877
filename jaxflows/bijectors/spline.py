"""Rational-quadratic spline transformer (Durkan et al. 2019, "Neural Spline Flows").

A monotone element-wise map ``v = tau(u; theta)`` made of ``K`` rational-quadratic
segments on ``[-B, B]`` and the identity outside (linear tails of slope 1).

Parameters (``theta: (..., 3K - 1)``, unconstrained):

- ``theta[..., :K]``        bin-width logits   ``a``
- ``theta[..., K:2K]``      bin-height logits  ``b``
- ``theta[..., 2K:]``       interior knot-derivative pre-activations ``c`` (K - 1 of them)

Constrained spline (``m_w, m_h, m_d`` the floors)::

    w_k = m_w + (2B - K m_w) softmax(a)_k            (sum_k w_k = 2B, w_k >= m_w)
    h_k = m_h + (2B - K m_h) softmax(b)_k
    x_0 = -B, x_k = -B + sum_{j<k} w_j, x_K = B       (same for y with h)
    d_0 = d_K = 1  (the tails have slope 1)
    d_k = m_d + softplus(c_k + log(expm1(1 - m_d)))   (d_k >= m_d, d_k = 1 at c_k = 0)

So ``theta == 0`` gives equal bins on both axes and unit derivatives: the identity.

Forward in bin ``k`` (``x_k <= u < x_{k+1}``), with ``s = h_k / w_k`` and
``xi = (u - x_k) / w_k`` in ``[0, 1]``::

    v = y_k + h_k [s xi^2 + d_k xi (1 - xi)] / [s + (d_{k+1} + d_k - 2 s) xi (1 - xi)]
    dv/du = s^2 [d_{k+1} xi^2 + 2 s xi (1 - xi) + d_k (1 - xi)^2]
            / [s + (d_{k+1} + d_k - 2 s) xi (1 - xi)]^2

Inverse in bin ``k`` (``y_k <= v < y_{k+1}``), with ``t = (v - y_k) / h_k``:
``xi`` is the root in ``[0, 1]`` of ``alpha xi^2 + beta xi + gamma = 0`` where::

    beta  = d_k - (d_{k+1} + d_k - 2 s) t,   alpha = s - beta,   gamma = -s t
    xi = 2 gamma / (-beta - sqrt(beta^2 - 4 alpha gamma))   if beta >= 0
    xi = (-beta + sqrt(beta^2 - 4 alpha gamma)) / (2 alpha)  if beta <  0

(the cancellation-free form of the quadratic formula for either sign of beta), then
``u = x_k + w_k xi`` and ``log|du/dv| = -log|dv/du|(xi)``.

For accuracy near both knots, points in the upper half of a bin are handled in
the reflected bin (``xi -> 1 - xi``, ``d_k <-> d_{k+1}``, measured from
``x_{k+1}``/``y_{k+1}``), which is the same segment written from its other end.

Numerical guards (the failure modes of flowjax #239 and nflows #87):

- the spline branch only ever sees in-range inputs (out-of-range inputs are
  replaced by 0 before the spline maths and the identity is selected with
  ``jnp.where``), so the discarded branch never makes inf/NaN values or gradients,
  for inputs like 1e6 or -1e30;
- ``xi`` and ``t`` are clamped to ``[0, 1]`` straight-through (value clamped,
  gradient 1), so round-off past a knot neither leaves the segment nor zeroes the
  gradient, and inputs exactly at a knot or at +-B get exact derivatives;
- the discriminant is clamped at a positive ``tiny`` (float32 round-off can make it
  slightly negative), and both root forms have guarded denominators;
- squared terms enter the log-derivative as ``2 log(.)`` (no overflow for large
  derivatives), and the floors keep every width, height and derivative away from
  zero for any finite ``theta``; the quadratic is rescaled so that huge
  derivatives do not overflow.  Tested in float32: finite values and gradients
  for ``|theta|`` up to 1e20 (values up to 1e30).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import as_float_array, relabel
from .._types import Array, Bijector, Transformer
from .elementwise import elementwise

__all__ = [
    "rational_quadratic_spline",
    "elementwise_spline",
    "spline_num_params",
    "spline_knots",
    "to_distrax_kwargs",
]


def spline_num_params(num_bins: int) -> int:
    """``3 * num_bins - 1``: K width logits, K height logits, K - 1 interior derivatives."""
    return 3 * num_bins - 1


def _check_config(num_bins, bound, min_bin_width, min_bin_height, min_derivative):
    if not isinstance(num_bins, (int, np.integer)) or isinstance(num_bins, bool) or num_bins < 1:
        raise ValueError(f"num_bins must be an integer >= 1, got {num_bins!r}")
    if not bound > 0:
        raise ValueError(f"bound must be > 0 (the spline acts on [-bound, bound]), got {bound!r}")
    for name, floor in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height)):
        if not floor > 0:
            raise ValueError(f"{name} must be > 0, got {floor!r}")
        if num_bins * floor >= 2.0 * bound:
            raise ValueError(
                f"num_bins * {name} must be < 2 * bound = {2.0 * bound}, "
                f"got {num_bins} * {floor} = {num_bins * floor}"
            )
    if not 0.0 < min_derivative < 1.0:
        raise ValueError(f"min_derivative must be in (0, 1), got {min_derivative!r}")


def _knot_positions(logits: Array, bound: float, min_size: float) -> Array:
    """Knots ``(..., K+1)`` from logits ``(..., K)``: first is exactly -B, last exactly B."""
    num_bins = logits.shape[-1]
    sizes = min_size + (2.0 * bound - num_bins * min_size) * jax.nn.softmax(logits, axis=-1)
    inner = -bound + jnp.cumsum(sizes[..., :-1], axis=-1)
    edge = jnp.ones(logits.shape[:-1] + (1,), logits.dtype)
    return jnp.concatenate([-bound * edge, inner, bound * edge], axis=-1)


def _knot_derivatives(raw: Array, min_derivative: float) -> Array:
    """Derivatives ``(..., K+1)`` from ``(..., K-1)`` pre-activations; boundaries are 1."""
    # softplus(offset) = 1 - m_d exactly in real arithmetic, so raw == 0 gives d = 1
    # (to float round-off: ~1 ulp); offset is computed in float64 on the host.
    offset = math.log(math.expm1(1.0 - min_derivative))
    inner = min_derivative + jax.nn.softplus(raw + offset)
    edge = jnp.ones(raw.shape[:-1] + (1,), raw.dtype)
    return jnp.concatenate([edge, inner, edge], axis=-1)


def spline_knots(
    theta: Array,
    bound: float = 3.0,
    *,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> Tuple[Array, Array, Array]:
    """Constrained knots ``(x, y, d)``, each ``(..., K+1)``, from ``theta: (..., 3K-1)``."""
    theta = as_float_array(theta, "theta")
    if theta.ndim < 1 or theta.shape[-1] % 3 != 2:
        raise ValueError(
            f"theta must have shape (..., 3 * num_bins - 1), got shape {tuple(theta.shape)}"
        )
    k = (theta.shape[-1] + 1) // 3
    x = _knot_positions(theta[..., :k], bound, min_bin_width)
    y = _knot_positions(theta[..., k : 2 * k], bound, min_bin_height)
    d = _knot_derivatives(theta[..., 2 * k :], min_derivative)
    return x, y, d


def _bin_params(value: Array, knots: Array, x: Array, y: Array, d: Array):
    """Select the bin of ``value`` (already inside ``[knots_0, knots_K]``) from each knot array.

    The bin index counts the interior knots ``<= value``: in ``[0, K-1]``, with
    ``value == B`` in the last bin.  Selection is a one-hot masked sum (cheaper to
    compile and to differentiate than a gather, and the same on every backend).
    Returns ``(x_lo, x_hi, y_lo, y_hi, d_lo, d_hi)``.
    """
    num_bins = knots.shape[-1] - 1
    idx = jnp.sum(value[..., None] >= knots[..., 1:-1], axis=-1)
    onehot = idx[..., None] == jnp.arange(num_bins)

    def pick(a):
        return jnp.sum(jnp.where(onehot, a, 0.0), axis=-1)

    return (pick(x[..., :-1]), pick(x[..., 1:]), pick(y[..., :-1]), pick(y[..., 1:]),
            pick(d[..., :-1]), pick(d[..., 1:]))


def _clamp01(z: Array) -> Array:
    """Clamp to ``[0, 1]`` in value, with gradient 1 (straight-through).

    ``z`` is in ``[0, 1]`` up to round-off only; a plain clip would give a zero
    (or, at a tie, halved) gradient to inputs that round-off pushes over a knot.
    """
    z_const = jax.lax.stop_gradient(z)
    return jnp.clip(z_const, 0.0, 1.0) + (z - z_const)


def _nearest_end(from_lo: Array, from_hi: Array, d_lo: Array, d_hi: Array):
    """Measure a bin position from its nearer end, for accuracy near both knots.

    The spline segment is symmetric under the reflection ``xi -> 1 - xi`` with
    ``d_lo <-> d_hi`` (and ``v -> y_lo + y_hi - v``), so every formula is written
    for the lower end and applied to the reflected bin when the point is in its
    upper half.  Returns ``(lower, distance, d_near, d_far)``.
    """
    lower = from_lo <= from_hi
    return (lower, jnp.where(lower, from_lo, from_hi),
            jnp.where(lower, d_lo, d_hi), jnp.where(lower, d_hi, d_lo))


def _quadratic_root(t: Array, s: Array, d_a: Array, d_b: Array) -> Array:
    """The root ``xi`` in ``[0, 1]`` of ``alpha xi^2 + beta xi + gamma = 0`` (module docstring).

    Cancellation-free for either sign of ``beta``; the discriminant is clamped at
    ``tiny`` (float32 round-off can make it negative, nflows #87) and both
    branches get safe denominators so the discarded one has finite gradients.
    """
    beta = d_a - (d_a + d_b - 2.0 * s) * t
    alpha = s - beta
    gamma = -s * t
    # The root is invariant to scaling all three coefficients: keep beta^2 finite
    # even for huge derivatives (theta ~ 1e30 in float32).
    scale = jax.lax.stop_gradient(jnp.maximum(jnp.abs(beta), 1.0))
    alpha, beta, gamma = alpha / scale, beta / scale, gamma / scale
    tiny = jnp.finfo(t.dtype).tiny
    disc = beta * beta - 4.0 * alpha * gamma
    root = jnp.where(disc > tiny, jnp.sqrt(jnp.maximum(disc, tiny)), 0.0)
    pos = beta >= 0.0
    den_pos = jnp.where(pos, jnp.minimum(-beta - root, -tiny), -1.0)
    den_neg = jnp.where(pos, 1.0, jnp.maximum(2.0 * alpha, tiny))
    return jnp.where(pos, 2.0 * gamma / den_pos, (root - beta) / den_neg)


def _log_slope(xi: Array, s: Array, d_lo: Array, d_hi: Array) -> Array:
    """``log dv/du`` inside a bin, as ``2 log s + log(num) - 2 log(den)`` (no overflow)."""
    one_m = 1.0 - xi
    xi1m = xi * one_m
    num = d_hi * xi * xi + 2.0 * s * xi1m + d_lo * one_m * one_m
    den = s + (d_hi + d_lo - 2.0 * s) * xi1m  # >= s / 2 > 0 for xi in [0, 1]
    return 2.0 * jnp.log(s) + jnp.log(num) - 2.0 * jnp.log(den)


def _check_inputs(u: Array, theta: Array, num_params: int, name: str):
    u = as_float_array(u, name)
    theta = as_float_array(theta, "theta")
    expected = tuple(u.shape) + (num_params,)
    if tuple(theta.shape) != expected:
        raise ValueError(
            f"theta must have shape {name}.shape + (num_params,) = {expected}, "
            f"got {tuple(theta.shape)}"
        )
    dtype = jnp.result_type(u.dtype, theta.dtype)
    return u.astype(dtype), theta.astype(dtype)


def _segment_forward(u: Array, x: Array, y: Array, d: Array) -> Tuple[Array, Array]:
    """``(v, log dv/du)`` for ``u`` inside ``[-B, B]``, in its bin (module docstring)."""
    x_lo, x_hi, y_lo, y_hi, d_lo, d_hi = _bin_params(u, x, x, y, d)
    w, h = x_hi - x_lo, y_hi - y_lo
    s = h / w
    lower, z, d_a, d_b = _nearest_end(u - x_lo, x_hi - u, d_lo, d_hi)
    z = _clamp01(z / w)
    z1mz = z * (1.0 - z)
    step = h * (s * z * z + d_a * z1mz) / (s + (d_a + d_b - 2.0 * s) * z1mz)
    return jnp.where(lower, y_lo + step, y_hi - step), _log_slope(z, s, d_a, d_b)


def _segment_inverse(v: Array, x: Array, y: Array, d: Array) -> Tuple[Array, Array]:
    """``(u, log du/dv)`` for ``v`` inside ``[-B, B]``: the root of the bin's quadratic."""
    x_lo, x_hi, y_lo, y_hi, d_lo, d_hi = _bin_params(v, y, x, y, d)
    w, h = x_hi - x_lo, y_hi - y_lo
    s = h / w
    lower, t, d_a, d_b = _nearest_end(v - y_lo, y_hi - v, d_lo, d_hi)
    t = _clamp01(t / h)
    z = _clamp01(_quadratic_root(t, s, d_a, d_b))
    return jnp.where(lower, x_lo + w * z, x_hi - w * z), -_log_slope(z, s, d_a, d_b)


def rational_quadratic_spline(
    num_bins: int = 8,
    bound: float = 3.0,
    *,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> Transformer:
    """Monotone rational-quadratic spline on ``[-bound, bound]`` with identity tails.

    Returns a ``Transformer`` with ``num_params = 3 * num_bins - 1`` whose
    ``forward(u, theta) -> (v, log|dv/du|)`` and ``inverse(v, theta) -> (u, log|du/dv|)``
    act element-wise: ``u: s``, ``theta: s + (num_params,)``, outputs of shape ``s``.
    See the module docstring for the parameterisation and formulas.  ``theta == 0``
    is the identity; outside ``[-bound, bound]`` the map is the identity (log-det 0).

    Args:
      num_bins: number of segments ``K`` (>= 1).
      bound: ``B``; the spline acts on ``[-B, B]`` in both ``u`` and ``v``.
      min_bin_width, min_bin_height: floors on bin sizes (``K * floor < 2B``).
      min_derivative: floor on the interior knot derivatives, in ``(0, 1)``.
    """
    _check_config(num_bins, bound, min_bin_width, min_bin_height, min_derivative)
    bound = float(bound)
    num_params = spline_num_params(num_bins)
    knots = dict(min_bin_width=min_bin_width, min_bin_height=min_bin_height,
                 min_derivative=min_derivative)

    def forward(u: Array, theta: Array) -> Tuple[Array, Array]:
        u, theta = _check_inputs(u, theta, num_params, "u")
        x, y, d = spline_knots(theta, bound, **knots)
        inside = (u >= -bound) & (u <= bound)
        uc = jnp.where(inside, u, 0.0)  # the spline branch never sees out-of-range values
        v_in, ld_in = _segment_forward(uc, x, y, d)
        v = jnp.where(inside, v_in, u)
        ld = jnp.where(inside, ld_in, jnp.zeros_like(ld_in))
        return v, ld

    def inverse(v: Array, theta: Array) -> Tuple[Array, Array]:
        v, theta = _check_inputs(v, theta, num_params, "v")
        x, y, d = spline_knots(theta, bound, **knots)
        inside = (v >= -bound) & (v <= bound)
        vc = jnp.where(inside, v, 0.0)
        u_in, ld_in = _segment_inverse(vc, x, y, d)
        u = jnp.where(inside, u_in, v)
        ld = jnp.where(inside, ld_in, jnp.zeros_like(ld_in))
        return u, ld

    return Transformer(num_params=num_params, forward=forward, inverse=inverse)


def elementwise_spline(
    dim: int,
    num_bins: int = 8,
    bound: float = 3.0,
    *,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> Bijector:
    """An unconditional bijector applying one learnable spline per dimension:
    ``elementwise(rational_quadratic_spline(num_bins, bound, ...), dim)``.

    ``params = {"theta": (dim, 3 * num_bins - 1)}``, initialised to zeros (the
    identity; the key is unused).  ``forward(params, z)`` maps one event
    ``z: (dim,)`` by ``x_i = tau(z_i; theta_i)`` and returns ``sum_i log|dx_i/dz_i|``;
    ``inverse`` applies ``tau^{-1}`` and returns ``sum_i log|dz_i/dx_i|``.
    ``context`` must be ``None``.
    """
    spline = rational_quadratic_spline(
        num_bins, bound, min_bin_width=min_bin_width, min_bin_height=min_bin_height,
        min_derivative=min_derivative,
    )
    return relabel(elementwise(spline, dim), "elementwise_spline")


def to_distrax_kwargs(
    theta: Array,
    bound: float = 3.0,
    *,
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
) -> Dict[str, Any]:
    """Keyword arguments for ``distrax.RationalQuadraticSpline`` reproducing our spline.

    ``distrax.RationalQuadraticSpline(**to_distrax_kwargs(theta, B, ...))`` computes
    the same map as ``rational_quadratic_spline(K, B, ...)`` with ``theta: (..., 3K-1)``.
    distrax takes ``params: (..., 3K+1)`` = (width logits, height logits, K+1 knot
    slopes), one ``min_bin_size`` for both axes and the same slope formula
    ``min_knot_slope + softplus(c + log(expm1(1 - min_knot_slope)))``.  We pass
    ``boundary_slopes="identity"`` (the two boundary slope entries are ignored, we
    give 0), ``min_knot_slope = min_derivative`` and
    ``min_bin_size = min(min_bin_width, min_bin_height)``; the axis whose floor is
    larger gets logits ``log(size - min_bin_size)``, which distrax's softmax maps back
    to the same sizes.  distrax is not imported here (it is not a dependency).
    """
    theta = as_float_array(theta, "theta")
    x, y, _ = spline_knots(theta, bound, min_bin_width=min_bin_width,
                           min_bin_height=min_bin_height, min_derivative=min_derivative)
    k = (theta.shape[-1] + 1) // 3
    floor = min(min_bin_width, min_bin_height)

    def logits(raw, knots, own_floor):
        if own_floor == floor:
            return raw
        return jnp.log(jnp.diff(knots, axis=-1) - floor)

    zero = jnp.zeros(theta.shape[:-1] + (1,), theta.dtype)
    params = jnp.concatenate(
        [logits(theta[..., :k], x, min_bin_width),
         logits(theta[..., k : 2 * k], y, min_bin_height),
         zero, theta[..., 2 * k :], zero],
        axis=-1,
    )
    return dict(params=params, range_min=-float(bound), range_max=float(bound),
                boundary_slopes="identity", min_bin_size=floor, min_knot_slope=min_derivative)
