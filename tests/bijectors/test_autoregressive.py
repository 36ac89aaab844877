"""The autoregressive kernel (jaxflows/bijectors/autoregressive.py).

The cached (one-pass-cost) sequential inversion equals the plain scan.

``autoregressive(..., method="cached")`` computes one block of hidden units
per layer per step (``jaxflows.nn.made_sequential``); ``method="scan"`` runs
the whole MADE at every step.  They must agree in values, log-dets and
gradients (w.r.t. params, inputs and context) for every architecture the
kernel accepts.  Computed in float64 so that the comparison is tight
(1e-5 relative) whatever the summation order.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.bijectors.autoregressive import autoregressive, iaf_layer, maf_layer
from jaxflows.bijectors.combinators import stack
from jaxflows.bijectors.elementwise import affine
from jaxflows.bijectors.spline import rational_quadratic_spline
from jaxflows.flows import layer_orders, transformed
from jaxflows.nn import made_apply, made_config, made_init, made_sequential
from jaxflows.testing import perturb_params

RTOL = ATOL = 1e-5
DIM = 5
RANDOM_ORDER = np.array([3, 0, 4, 1, 2])

CASES = {
    "depth0": dict(hidden=()),
    "depth1": dict(hidden=(8,)),  # 8 units over 4 degrees: full blocks
    "depth2": dict(hidden=(10, 9)),  # widths not divisible by the 4 degrees
    "depth3": dict(hidden=(12, 12, 12)),
    "depth0_context": dict(hidden=(), context_dim=3),
    "depth1_context": dict(hidden=(7,), context_dim=2),  # 7 units over 5 degrees (0..4)
    "depth2_context_random_order": dict(hidden=(11, 13), context_dim=3, order=RANDOM_ORDER),
    "residual": dict(hidden=(9, 9, 9), residual=True),
    "residual_context": dict(hidden=(10, 10), residual=True, context_dim=2),
    "random_order": dict(hidden=(6,), order=RANDOM_ORDER),
    "tanh": dict(hidden=(7, 7), activation="tanh"),
    # soft-clamped conditioner inputs (small bound: the clamp is active at the test points)
    "input_bound": dict(hidden=(8, 8), order=RANDOM_ORDER, input_bound=0.5),
    "input_bound_depth0_context": dict(hidden=(), context_dim=2, input_bound=0.5),
}


@pytest.fixture(autouse=True)
def _x64():
    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", prev)


def _pair(transformer, dim=DIM, **kw):
    cached = autoregressive(dim, transformer, method="cached", **kw)
    ref = autoregressive(dim, transformer, method="scan", **kw)
    params = perturb_params(cached.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.5)
    return cached, ref, params


def _inputs(dim, context_dim, seed=2):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    y = jax.random.normal(k1, (dim,))
    c = None if context_dim is None else jax.random.normal(k2, (context_dim,))
    return y, c


def _close(a, b):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=RTOL, atol=ATOL)


def _loss(bij):
    def loss(params, y, c):
        a, ld = bij.inverse(params, y, c)
        return jnp.sum(jnp.sin(a) * jnp.arange(1.0, a.shape[0] + 1)) + ld

    return loss


def _both_ways(cached, ref, argnums):
    """Both inverses, the parallel pass at the cached inverse's output and both
    gradients, compiled together (one compile per case instead of five)."""

    def run(params, y, c):
        a_c, ld_c = cached.inverse(params, y, c)
        return dict(cached=(a_c, ld_c), ref=ref.inverse(params, y, c),
                    forward=cached.forward(params, a_c, c),
                    g_cached=jax.grad(_loss(cached), argnums)(params, y, c),
                    g_ref=jax.grad(_loss(ref), argnums)(params, y, c))

    return jax.jit(run)


@pytest.mark.parametrize("name", sorted(CASES))
def test_cached_equals_scan_values_logdets_gradients(name):
    kw = CASES[name]
    cached, ref, params = _pair(affine(), **kw)
    y, c = _inputs(DIM, kw.get("context_dim"))
    out = _both_ways(cached, ref, (0, 1) if c is None else (0, 1, 2))(params, y, c)
    a_c, ld_c = out["cached"]
    _close((a_c, ld_c), out["ref"])
    # the inverse really inverts the parallel pass (values are not trivially equal)
    b, ld_f = out["forward"]
    _close((b, -ld_f), (y, ld_c))
    assert float(jnp.max(jnp.abs(a_c - y))) > 1e-2
    _close(out["g_cached"], out["g_ref"])


def test_cached_equals_scan_with_traced_order_under_vmap():
    """The order is a tracer inside ``stack``'s scan; events are vmapped."""
    orders = jnp.asarray(np.stack([RANDOM_ORDER, np.arange(DIM)[::-1]]))

    def run(method, params, ys):
        def one(order, p, y):
            bij = autoregressive(DIM, affine(), hidden=(9, 9), order=order, method=method)
            return bij.inverse(p, y)

        return jax.vmap(lambda y: jax.vmap(one, (0, 0, None))(orders, params, y))(ys)

    bij = autoregressive(DIM, affine(), hidden=(9, 9))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    params = jax.vmap(lambda k: perturb_params(bij.init(k), k, 0.5))(keys)
    ys = jax.random.normal(jax.random.PRNGKey(3), (4, DIM))
    both = jax.jit(lambda p, y: (run("cached", p, y), run("scan", p, y)))(params, ys)  # one compile
    _close(*both)


@pytest.mark.parametrize("hidden", [(), (8, 8)])
def test_cached_equals_scan_with_spline_transformer(hidden):
    cached, ref, params = _pair(rational_quadratic_spline(4, 3.0), hidden=hidden, context_dim=2)
    y, c = _inputs(DIM, 2)
    y = 2.0 * y

    @jax.jit
    def run(params, y, c):  # one compile instead of four
        return {name: (bij.inverse(params, y, c), jax.grad(_loss(bij), (0, 1))(params, y, c))
                for name, bij in (("cached", cached), ("ref", ref))}

    out = run(params, y, c)
    _close(out["cached"][0], out["ref"][0])
    _close(out["cached"][1], out["ref"][1])


def test_made_sequential_reproduces_made_apply_thetas():
    """``solve`` sees exactly the MADE's output for the variable it solves."""
    cfg = made_config(DIM, (10, 7), 2, context_dim=2)
    params = perturb_params(made_init(jax.random.PRNGKey(0), cfg), jax.random.PRNGKey(1), 0.5)
    c = jnp.ones(2)
    target = jax.random.normal(jax.random.PRNGKey(2), (DIM,))

    def solve(k, theta):  # a_{order[k]} = target[k] + theta_0, record theta
        return target[k] + theta[0], theta

    a, thetas = jax.jit(lambda p: made_sequential(p, cfg, RANDOM_ORDER, solve, c))(params)
    full = jax.jit(lambda p, a: made_apply(p, a, cfg, RANDOM_ORDER, c))(params, a)
    _close(thetas, full[RANDOM_ORDER])


def test_bad_method_rejected():
    with pytest.raises(ValueError, match="method must be one of"):
        autoregressive(3, affine(), method="newton")


def _flow(kind, method, dim=4, num_layers=3, **kw):
    make = maf_layer if kind == "maf" else iaf_layer
    orders = layer_orders(dim, num_layers, "random", seed=1)
    bij = stack(lambda o: make(dim, order=o, method=method, **kw), num_layers, per_layer=orders)
    return transformed(bij, "normal", dim=dim, context_dim=kw.get("context_dim"))


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_maf_sample_and_iaf_log_prob_through_flows(kind):
    """The sequential direction of each flow: MAF sampling, IAF density."""
    kw = dict(hidden=(9,), context_dim=2)
    c = jax.random.normal(jax.random.PRNGKey(7), (6, 2))
    fc, fr = _flow(kind, "cached", **kw), _flow(kind, "scan", **kw)
    params = perturb_params(fc.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.3)
    if kind == "maf":
        draw = lambda f, p: f.sample_and_log_prob(p, jax.random.PRNGKey(4), (), c)  # noqa: E731
        _close(*jax.jit(lambda p: (draw(fc, p), draw(fr, p)))(params))  # one compile
    else:  # density of data it did not sample, and its training gradient
        x = jax.random.normal(jax.random.PRNGKey(5), (6, 4))

        def density_and_grad(f, p):
            return f.log_prob(p, x, c), jax.grad(lambda q: -jnp.mean(f.log_prob(q, x, c)))(p)

        # one compile for both flows
        out_c, out_r = jax.jit(lambda p: (density_and_grad(fc, p), density_and_grad(fr, p)))(params)
        _close(out_c[0], out_r[0])
        _close(out_c[1], out_r[1])
