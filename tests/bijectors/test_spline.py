"""Tests for the rational-quadratic spline transformer (jaxflows/bijectors/spline.py).

Compilation dominates the cost of these tests on a CPU, so every check runs
through one jitted "probe" per direction and dtype (values, log-derivatives and
all gradients at once) on inputs of one shape, ``(N,)``.
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.bijectors.spline import (
    elementwise_spline,
    rational_quadratic_spline,
    spline_knots,
    spline_num_params,
    to_distrax_kwargs,
)

K, B = 5, 3.0
P = spline_num_params(K)  # 14
N = 22  # every probe input has shape (N,); 22 = 10 special values + 2 * (K + 1) knots


@functools.lru_cache(maxsize=None)
def _probes():
    """Jitted ``probe(u, theta)`` for forward and inverse: the map, its log-derivative,
    the autodiff slope ``d out / d u`` and the gradients of ``sum(out)`` and ``sum(ld)``
    with respect to ``u`` and ``theta``."""
    t = rational_quadratic_spline(K, B)

    def make(fn):
        def probe(u, theta):
            (out, ld), vjp = jax.vjp(fn, u, theta)
            # two cotangents at once: d sum(out) and d sum(ld) w.r.t. (u, theta)
            one, zero = jnp.ones_like(out), jnp.zeros_like(out)
            g_u, g_theta = jax.vmap(vjp)((jnp.stack([one, zero]), jnp.stack([zero, one])))
            return dict(out=out, ld=ld, slope=g_u[0], g_out_theta=g_theta[0],
                        g_ld_u=g_u[1], g_ld_theta=g_theta[1])

        return jax.jit(probe)

    return {"fwd": make(t.forward), "inv": make(t.inverse)}


def _probe(direction, u, theta):
    assert u.shape == (N,) and theta.shape == (N, P)
    return _probes()[direction](u, theta)


def _normal(seed, shape):
    # NumPy draws: jax.random would compile a sampler per shape and dtype
    return np.random.default_rng(seed).standard_normal(shape)


def _theta(seed, shape, scale=2.0, dtype=jnp.float32):
    return jnp.asarray(scale * _normal(seed, shape + (P,)), dtype)


@functools.lru_cache(maxsize=None)
def _jitted_knots(floors=(1e-3, 1e-3, 1e-3)):
    mw, mh, md = floors
    return jax.jit(functools.partial(
        spline_knots, bound=B, min_bin_width=mw, min_bin_height=mh, min_derivative=md
    ))


def _knots(theta, floors=(1e-3, 1e-3, 1e-3)):
    """``spline_knots`` of theta: (N, P), jitted (one compile instead of one per op)."""
    assert theta.shape == (N, P)
    return _jitted_knots(floors)(theta)


def _inputs(dtype=jnp.float32):
    """Inside, outside, both boundaries and the tails."""
    u = [-5.0, -3.0, -2.9, -1.3, -0.2, 0.0, 0.7, 1.9, 2.99, 3.0, 4.5]
    return jnp.asarray(u + list(np.linspace(-3.4, 3.3, N - len(u))), dtype)


def _assert_finite(d, where):
    for name, a in d.items():
        assert np.all(np.isfinite(np.asarray(a))), (where, name, a)


def test_num_params_and_config_errors():
    assert rational_quadratic_spline(8).num_params == 23
    assert rational_quadratic_spline(1).num_params == 2
    with pytest.raises(ValueError, match="num_bins"):
        rational_quadratic_spline(0)
    with pytest.raises(ValueError, match="bound"):
        rational_quadratic_spline(4, bound=0.0)
    with pytest.raises(ValueError, match="min_bin_width"):
        rational_quadratic_spline(10, bound=1.0, min_bin_width=0.2)
    with pytest.raises(ValueError, match="min_derivative"):
        rational_quadratic_spline(4, min_derivative=1.0)


def test_shape_and_dtype_errors():
    t = rational_quadratic_spline(K, B)
    u = jnp.zeros((3,))
    with pytest.raises(ValueError, match=r"theta must have shape .*\(3, 14\)"):
        t.forward(u, jnp.zeros((3, 13)))
    with pytest.raises(ValueError, match="theta must have shape"):
        t.inverse(u, jnp.zeros((14,)))
    with pytest.raises(TypeError, match="u must be a floating-point"):
        t.forward(jnp.zeros((3,), jnp.int32), jnp.zeros((3, 14)))


def _assert_round_trip(first, second, u, atol):
    """``second(first(u)) == u``.  An error ``e`` in the intermediate value ``w`` moves
    the result by ``e * slope_second(w) = e * exp(-ld_first)``, so the error is
    measured in units of ``w`` (where ``ld_first`` is large in magnitude, plain
    float32 round-off of ``w`` is amplified or hidden by a factor ``e^|ld|``)."""
    err = np.abs(np.asarray(second["out"] - u)) * np.exp(np.asarray(first["ld"]))
    assert err.max() <= atol, err


def test_round_trip_both_ways_and_log_dets():
    u = _inputs()
    theta = _theta(0, u.shape)
    f = _probe("fwd", u, theta)
    back = _probe("inv", f["out"], theta)
    _assert_round_trip(f, back, u, 2e-6)
    # ld_inv(v) = -ld_fwd(f^-1(v)) at the point the inverse returned (comparing with
    # ld_fwd(u) instead would be ill-conditioned where the slope is ~e^-12)
    np.testing.assert_allclose(back["ld"], -_probe("fwd", back["out"], theta)["ld"], atol=1e-4)
    assert np.abs(f["ld"]).max() > 5.0  # the sharp case is exercised
    # the other way: inverse first
    i = _probe("inv", u, theta)
    again = _probe("fwd", i["out"], theta)
    _assert_round_trip(i, again, u, 2e-6)
    np.testing.assert_allclose(again["ld"], -_probe("inv", again["out"], theta)["ld"], atol=1e-4)
    assert f["out"].shape == f["ld"].shape == u.shape and f["out"].dtype == jnp.float32
    assert not np.allclose(f["out"], u)  # the random spline is not the identity
    # at a milder spline plain tolerances are tight both ways
    theta = 0.3 * theta
    for first, second in (("fwd", "inv"), ("inv", "fwd")):
        a = _probe(first, u, theta)
        b = _probe(second, a["out"], theta)
        np.testing.assert_allclose(b["out"], u, atol=3e-6)
        np.testing.assert_allclose(b["ld"], -a["ld"], atol=3e-6)


def test_log_derivative_matches_autodiff():
    u = _inputs()
    for key in range(2):
        theta = _theta(10 + key, u.shape)
        for direction in ("fwd", "inv"):
            p = _probe(direction, u, theta)
            assert np.all(p["slope"] > 0)
            np.testing.assert_allclose(np.log(p["slope"]), p["ld"], atol=2e-5)
            assert np.abs(p["ld"]).max() > 0.5  # a non-trivial spline


def test_leading_shape():
    t = rational_quadratic_spline(K, B)
    u = _inputs()
    theta = _theta(1, u.shape)
    v, ld = jax.jit(t.forward)(u.reshape(2, 11), theta.reshape(2, 11, P))
    assert v.shape == ld.shape == (2, 11)
    p = _probe("fwd", u, theta)
    np.testing.assert_allclose(v.reshape(-1), p["out"], rtol=1e-6)
    np.testing.assert_allclose(ld.reshape(-1), p["ld"], rtol=1e-6, atol=1e-7)
    shapes = jax.eval_shape(t.inverse, jnp.zeros((4, 3, 2)), jnp.zeros((4, 3, 2, P)))
    assert [s.shape for s in shapes] == [(4, 3, 2), (4, 3, 2)]


def test_monotone_and_continuous():
    theta = jnp.broadcast_to(_theta(4, (), scale=3.0), (N, P))
    grid = jnp.linspace(-4.0, 4.0, 40 * N)
    for direction in ("fwd", "inv"):
        v = np.concatenate([_probe(direction, c, theta)["out"] for c in grid.reshape(-1, N)])
        assert np.all(np.diff(v) > 0), direction
    # knots map to knots, and the map is continuous across each knot: a step of
    # delta either side moves the output by about slope * delta (no jumps)
    x, y, _ = (np.asarray(k[0]) for k in _knots(theta))
    delta = 1e-4
    for direction, src, dst in (("fwd", x, y), ("inv", y, x)):
        u = jnp.asarray(np.concatenate([src, src - delta, src + delta, [0.0] * 4]), jnp.float32)
        p = _probe(direction, u, theta)
        out, slope = np.asarray(p["out"]), np.exp(np.asarray(p["ld"]))
        k = K + 1
        np.testing.assert_allclose(out[:k], dst, atol=1e-5)
        for side in (1, 2):
            moved = np.abs(out[side * k : (side + 1) * k] - dst)
            bound = delta * np.maximum(slope[:k], slope[side * k : (side + 1) * k]) * 1.5 + 2e-6
            assert np.all(moved <= bound), (direction, moved, bound)
    assert min(np.diff(x).min(), np.diff(y).min()) < 0.01  # a narrow bin is exercised


def test_identity_at_zero():
    u = _inputs()
    theta = jnp.zeros((N, P))
    for direction in ("fwd", "inv"):
        p = _probe(direction, u, theta)
        np.testing.assert_allclose(p["out"], u, atol=1e-6)
        np.testing.assert_allclose(p["ld"], 0.0, atol=1e-6)
        np.testing.assert_allclose(p["slope"], 1.0, atol=1e-5)
        # the parameters are trainable from the identity: gradients finite, not zero
        _assert_finite(p, direction)
        assert np.abs(p["g_out_theta"]).max() > 0.1
    x, y, d = _knots(theta)
    np.testing.assert_allclose(d, 1.0, rtol=2e-7)  # 1 to round-off
    np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(x[0], jnp.linspace(-B, B, K + 1), atol=1e-6)


def test_tails_are_identity_and_boundaries_fixed():
    u = jnp.asarray([-1e6, -10.0, -3.0001, -3.0, 3.0, 3.0001, 10.0, 1e6, 1e30, -1e30, 3.5] * 2)
    theta = _theta(5, u.shape, scale=3.0)
    for direction in ("fwd", "inv"):
        p = _probe(direction, u, theta)
        np.testing.assert_array_equal(p["out"], u)  # identity outside, and +-B map to +-B
        out = np.abs(np.asarray(u)) > B
        np.testing.assert_array_equal(np.asarray(p["ld"])[out], 0.0)
        np.testing.assert_array_equal(np.asarray(p["slope"])[out], 1.0)
        np.testing.assert_array_equal(np.asarray(p["g_out_theta"])[out], 0.0)
        # the boundary slope is 1: the log-derivative is continuous across +-B
        np.testing.assert_allclose(np.asarray(p["ld"])[~out], 0.0, atol=1e-5)


def _edge_inputs(theta_row, dtype):
    x, y, _ = (k[0] for k in _knots(jnp.broadcast_to(theta_row, (N, P))))
    eps = np.finfo(np.dtype(dtype)).eps
    special = jnp.asarray(
        [1e6, -1e6, 1e30, -1e30, B, -B, B * (1 + eps), -B * (1 + eps), B * (1 - eps), 0.0],
        dtype,
    )
    return jnp.concatenate([special, x, y])  # bin edges exactly, on both axes


EXTREME_THETAS = {
    "random": lambda key: _theta(key, (), scale=2.0),
    "plus_1e4": lambda key: jnp.full((P,), 1e4),
    "minus_1e4": lambda key: jnp.full((P,), -1e4),
    "mixed_1e4": lambda key: 1e4 * jnp.sign(jnp.asarray(_normal(key, (P,)), jnp.float32)),
    "random_1e4": lambda key: _theta(key, (), scale=1e4),
    "mixed_1e20": lambda key: 1e20 * jnp.sign(jnp.asarray(_normal(key, (P,)), jnp.float32)),
}


def _check_edge_cases(theta_fn, dtype):
    theta_row = theta_fn(6).astype(dtype)
    u = _edge_inputs(theta_row, dtype)
    theta = jnp.broadcast_to(theta_row, (N, P))
    for direction in ("fwd", "inv"):
        p = _probe(direction, u, theta)
        assert p["out"].dtype == p["ld"].dtype == dtype
        _assert_finite(p, direction)  # values and every gradient
        if np.abs(theta_row).max() <= 1e4:
            # the log-derivative still matches autodiff at every edge input (with
            # derivatives ~1e20, autodiff of the quotient and the root cancels
            # catastrophically in float32; the closed-form log-derivative does not)
            assert np.all(p["slope"] > 0), direction
            np.testing.assert_allclose(np.log(p["slope"]), p["ld"], atol=1e-3, err_msg=direction)


@pytest.mark.parametrize("name", sorted(EXTREME_THETAS))
def test_no_nan_values_or_gradients_at_edge_cases(name):
    _check_edge_cases(EXTREME_THETAS[name], jnp.float32)


def test_values_finite_at_theta_1e30():
    # (gradients overflow float32 somewhere past |theta| ~ 1e20; values do not)
    for seed in range(3):
        row = 1e30 * jnp.sign(jnp.asarray(_normal(seed, (P,)), jnp.float32))
        u = _edge_inputs(row, jnp.float32)
        for direction in ("fwd", "inv"):
            p = _probe(direction, u, jnp.broadcast_to(row, (N, P)))
            _assert_finite({"out": p["out"], "ld": p["ld"]}, direction)


def test_quadratic_root_guards():
    # A double root (discriminant exactly 0) and a round-off-negative discriminant
    # (the nflows #87 failure): finite root in [0, 1] and finite gradients.
    from jaxflows.bijectors.spline import _quadratic_root

    root = jax.jit(jax.value_and_grad(lambda args: _quadratic_root(*args)))
    for d_b in (0.0, -1e-7):
        args = tuple(jnp.float32(a) for a in (1.0, 1.0, 1.0, d_b))  # t, s, d_a, d_b
        z, grads = root(args)
        np.testing.assert_allclose(z, 1.0, atol=1e-6)
        assert all(np.isfinite(g) for g in grads), grads


def test_floors_hold_for_extreme_parameters():
    theta = 1e4 * jnp.sign(jnp.asarray(_normal(3, (N, P)), jnp.float32))
    x, y, d = _knots(theta, (1e-3, 2e-3, 1e-3))
    assert np.diff(np.asarray(x)).min() >= 1e-3 * (1 - 1e-3)
    assert np.diff(np.asarray(y)).min() >= 2e-3 * (1 - 1e-3)
    assert np.asarray(d).min() >= 1e-3
    assert np.asarray(d).max() <= 1e4 + 1  # finite at +1e4


def test_float64():
    with jax.enable_x64(True):
        u = _inputs(jnp.float64)
        theta = _theta(7, u.shape, dtype=jnp.float64)
        f = _probe("fwd", u, theta)
        assert f["out"].dtype == f["ld"].dtype == jnp.float64
        back = _probe("inv", f["out"], theta)
        np.testing.assert_allclose(back["out"], u, atol=1e-9)
        np.testing.assert_allclose(back["ld"], -f["ld"], atol=1e-9)
        np.testing.assert_allclose(np.log(f["slope"]), f["ld"], atol=1e-10)
        np.testing.assert_allclose(np.log(back["slope"]), back["ld"], atol=1e-9)
        for name in ("random", "mixed_1e4"):
            _check_edge_cases(EXTREME_THETAS[name], jnp.float64)


def test_matches_distrax_float64():
    # the same maths in float64 agree to round-off, even for a sharp spline (in
    # float32 both differ from the exact map by up to ~1e-4 where a bin is ~1e-3 wide)
    with jax.enable_x64(True):
        _compare_with_distrax(jnp.float64, scale=3.0, atol=1e-10)


def _distrax():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pytest.importorskip("distrax")


def _compare_with_distrax(dtype, scale, atol):
    """Default floors, through the probes: values and log-derivatives both ways."""
    distrax = _distrax()
    u = _inputs(dtype)
    theta = _theta(8, u.shape, scale=scale, dtype=dtype)

    @jax.jit
    def reference(theta, u):
        kwargs = to_distrax_kwargs(theta, B)
        assert kwargs["params"].shape == (N, 3 * K + 1) and kwargs["params"].dtype == dtype
        spline = distrax.RationalQuadraticSpline(**kwargs)
        return spline.forward_and_log_det(u), spline.inverse_and_log_det(u)

    for direction, (v_ref, ld_ref) in zip(("fwd", "inv"), reference(theta, u)):
        p = _probe(direction, u, theta)
        assert p["out"].dtype == v_ref.dtype == dtype
        np.testing.assert_allclose(p["out"], v_ref, atol=atol)
        np.testing.assert_allclose(p["ld"], ld_ref, atol=atol)
        assert not np.allclose(p["out"], u)


@pytest.mark.parametrize("floors", [(1e-3, 1e-3, 1e-3), (1e-2, 1e-3, 1e-2), (1e-3, 5e-2, 1e-4)])
def test_distrax_knots_match_for_any_floors(floors):
    # the segment formulas are compared above; with equal knots the maps are equal
    distrax = _distrax()
    mw, mh, md = floors
    theta = _theta(9, (N,), scale=3.0)

    @jax.jit
    def both(theta):
        ref = distrax.RationalQuadraticSpline(
            **to_distrax_kwargs(theta, B, min_bin_width=mw, min_bin_height=mh, min_derivative=md)
        )
        ours = spline_knots(theta, B, min_bin_width=mw, min_bin_height=mh, min_derivative=md)
        return (ref.x_pos, ref.y_pos, ref.knot_slopes), ours

    (x_ref, y_ref, d_ref), (x, y, d) = both(theta)
    np.testing.assert_allclose(x_ref, x, atol=1e-5)
    np.testing.assert_allclose(y_ref, y, atol=1e-5)
    np.testing.assert_allclose(d_ref, d, rtol=1e-5)
    assert np.diff(np.asarray(x)).min() >= mw * (1 - 1e-3)
    assert np.diff(np.asarray(y)).min() >= mh * (1 - 1e-3)


def test_elementwise_spline_bijector():
    b = elementwise_spline(N, num_bins=K, bound=B)

    @jax.jit
    def there_and_back(params, x):
        y, ld = b.forward(params, x)
        return y, ld, *b.inverse(params, y)

    params = b.init(jax.random.PRNGKey(0))
    assert params["theta"].shape == (N, P)
    np.testing.assert_array_equal(params["theta"], 0.0)
    x = _inputs()
    y, ld, _, _ = there_and_back(params, x)
    np.testing.assert_allclose(y, x, atol=1e-6)
    assert ld.shape == ()
    params = {"theta": _theta(9, (N,), scale=1.0)}
    y, ld, x2, ld_inv = there_and_back(params, x)
    p = _probe("fwd", x, params["theta"])
    np.testing.assert_allclose(y, p["out"], rtol=1e-6)
    np.testing.assert_allclose(ld, np.sum(p["ld"]), rtol=1e-5)  # = log|det| of a diagonal Jacobian
    assert abs(float(ld)) > 0.1
    np.testing.assert_allclose(x2, x, atol=1e-5)
    np.testing.assert_allclose(ld_inv, -ld, atol=1e-4)
    with pytest.raises(ValueError, match="takes no context"):
        b.forward(params, x, context=jnp.zeros(2))
    with pytest.raises(ValueError, match="takes no context"):
        b.inverse(params, x, jnp.zeros(2))
    with pytest.raises(ValueError, match=r"shape \(22,\)"):
        b.forward(params, jnp.zeros(4))
    with pytest.raises(ValueError, match="dim"):
        elementwise_spline(0)
