"""distrax interop (jaxflows/interop.py), checked against distrax's own bijectors."""

import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*pytype_aval_mappings.*")
    import distrax

import jaxflows
from jaxflows import interop
from jaxflows.bijectors import elementwise_affine
from jaxflows.bijectors.coupling import affine_coupling, coupling
from jaxflows.bijectors.spline import (elementwise_spline, rational_quadratic_spline,
                                       spline_num_params, to_distrax_kwargs)
from jaxflows.nn import mlp_apply

DIM = 4
MIN_SCALE = 1e-3
OFFSET = float(np.log(np.expm1(1.0 - MIN_SCALE)))  # softplus(0 + OFFSET) + MIN_SCALE == 1


def _perturb(params, key, scale=0.5):
    """Random non-identity params (every flow layer starts at the identity)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)])


def _points(key, shape=(3, 5)):
    return 2.0 * jax.random.normal(key, shape + (DIM,))


@partial(jax.jit, static_argnames="method")
def _call(obj, method, *args, **kwargs):
    """``obj.method(*args)`` under jit (distrax objects are pytrees): one
    compilation instead of hundreds of eager dispatches."""
    return getattr(obj, method)(*args, **kwargs)


@jax.jit
def _both_ways(ours, theirs, x):
    """Both bijectors forward at ``x`` and inverse at ``theirs``' output, as one program."""
    fwd_ours, (y2, ld2) = ours.forward_and_log_det(x), theirs.forward_and_log_det(x)
    return fwd_ours, (y2, ld2), ours.inverse_and_log_det(y2), theirs.inverse_and_log_det(y2)


def _assert_same_bijector(ours, theirs, x, atol=1e-5):
    """Same forward/inverse values and log-dets on a batch ``x: (..., DIM)``."""
    (y1, ld1), (y2, ld2), (x1, ild1), (x2, ild2) = _both_ways(ours, theirs, x)
    assert y1.shape == x.shape and ld1.shape == x.shape[:-1] == ld2.shape
    rtol = min(1e-5, 100 * atol)
    np.testing.assert_allclose(y1, y2, atol=atol, rtol=rtol)
    np.testing.assert_allclose(ld1, ld2, atol=atol, rtol=rtol)
    np.testing.assert_allclose(x1, x2, atol=10 * atol, rtol=10 * rtol)
    np.testing.assert_allclose(ild1, ild2, atol=10 * atol, rtol=10 * rtol)
    np.testing.assert_allclose(ild1, -ld1, atol=10 * atol, rtol=10 * rtol)


def test_elementwise_affine_matches_scalar_affine():
    bij = elementwise_affine(DIM, MIN_SCALE)
    params = _perturb(bij.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 1.0)
    theta = params["theta"]
    theirs = distrax.Block(distrax.ScalarAffine(
        shift=theta[:, 0], scale=jax.nn.softplus(theta[:, 1] + OFFSET) + MIN_SCALE), 1)
    ours = jaxflows.interop.to_distrax(bij, params)
    assert isinstance(ours, distrax.Bijector) and ours.event_ndims_in == 1
    _assert_same_bijector(ours, theirs, _points(jax.random.PRNGKey(2)))
    # and a single event, and under jit with the distrax object as an argument
    x = _points(jax.random.PRNGKey(3), ())
    np.testing.assert_allclose(ours.forward(x), theirs.forward(x), rtol=1e-5, atol=1e-6)
    y_jit, ld_jit = jax.jit(lambda b, x: b.forward_and_log_det(x))(ours, x)
    np.testing.assert_allclose(y_jit, theirs.forward(x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ld_jit, theirs.forward_log_det_jacobian(x), rtol=1e-5, atol=1e-6)


def test_wrong_params_are_not_silently_equal():
    """The comparison above can fail: a different shift gives different outputs."""
    bij = elementwise_affine(DIM, MIN_SCALE)
    params = _perturb(bij.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 1.0)
    theta = params["theta"]
    other = distrax.Block(distrax.ScalarAffine(
        shift=theta[:, 0] + 0.1, scale=jax.nn.softplus(theta[:, 1] + OFFSET) + MIN_SCALE), 1)
    with pytest.raises(AssertionError):
        _assert_same_bijector(interop.to_distrax(bij, params), other, _points(jax.random.PRNGKey(2)))


@pytest.mark.parametrize("num_bins,bound", [(5, 3.0), (8, 2.0)])
@pytest.mark.parametrize("x64", [False, True])
def test_spline_matches_rational_quadratic_spline(num_bins, bound, x64):
    with jax.enable_x64(x64):
        # float32 uses milder params: near-flat bins (slope ~1e-4) amplify the
        # inverse's round-off in both implementations beyond any fixed tolerance.
        _check_spline(num_bins, bound, atol=1e-10 if x64 else 2e-5, scale=1.5 if x64 else 0.7)


def _check_spline(num_bins, bound, atol, scale):
    bij = elementwise_spline(DIM, num_bins, bound)
    params = {"theta": scale * jax.random.normal(jax.random.PRNGKey(4), (DIM, spline_num_params(num_bins)))}
    theirs = distrax.Block(distrax.RationalQuadraticSpline(**to_distrax_kwargs(params["theta"], bound)), 1)
    x = _points(jax.random.PRNGKey(5))  # std 2: many points in the identity tails too
    assert np.mean(np.abs(x) > bound) > 0.05
    _assert_same_bijector(interop.to_distrax(bij, params), theirs, x, atol=atol)


def _coupling_case(kind):
    mask = np.array([True, False, True, False])
    if kind == "affine":
        bij = affine_coupling(DIM, mask, hidden=(16,), min_scale=MIN_SCALE)

        def inner(theta):
            return distrax.ScalarAffine(shift=theta[..., 0],
                                        scale=jax.nn.softplus(theta[..., 1] + OFFSET) + MIN_SCALE)
        num_params = 2
    else:
        num_bins, bound = 6, 3.0
        bij = coupling(DIM, rational_quadratic_spline(num_bins, bound), mask, hidden=(16,))

        def inner(theta):
            return distrax.RationalQuadraticSpline(**to_distrax_kwargs(theta, bound))
        num_params = spline_num_params(num_bins)
    return bij, mask, inner, num_params


@pytest.mark.parametrize("kind,x64", [("affine", False), ("spline", True)])
def test_coupling_matches_masked_coupling(kind, x64):
    """float64 for the spline: its flat bins amplify float32 round-off in the inverse."""
    with jax.enable_x64(x64):
        _check_coupling(kind, atol=1e-10 if x64 else 2e-5)


def _check_coupling(kind, atol):
    bij, mask, inner, num_params = _coupling_case(kind)
    params = _perturb(bij.init(jax.random.PRNGKey(6)), jax.random.PRNGKey(7), 0.5)

    def conditioner(masked_x):  # the same network on distrax's masked input
        theta = mlp_apply(params, masked_x)
        return theta.reshape(masked_x.shape[:-1] + (DIM, num_params))

    theirs = distrax.MaskedCoupling(mask=jnp.asarray(mask), conditioner=conditioner, bijector=inner)
    x = _points(jax.random.PRNGKey(8))
    ours = interop.to_distrax(bij, params)
    assert x.dtype == (jnp.float64 if atol < 1e-6 else jnp.float32)
    _assert_same_bijector(ours, theirs, x, atol=atol)
    y = _call(ours, "forward", x)
    np.testing.assert_array_equal(y[..., mask], x[..., mask])
    assert not np.allclose(y[..., ~mask], x[..., ~mask])


@pytest.mark.parametrize("factory,base", [("iaf", "normal"), ("maf", "diag_normal")])
def test_flow_matches_its_distrax_distribution(factory, base):
    flow = getattr(jaxflows, factory)(DIM, num_layers=2, hidden=(16,), base=base)
    params = _perturb(flow.init(jax.random.PRNGKey(9)), jax.random.PRNGKey(10), 0.15)
    dist = interop.to_distrax(flow, params)
    assert isinstance(dist, distrax.Transformed)
    assert isinstance(dist.distribution, distrax.MultivariateNormalDiag)
    assert dist.event_shape == (DIM,) and dist.batch_shape == ()
    x = _points(jax.random.PRNGKey(11))
    key = jax.random.PRNGKey(12)

    @jax.jit
    def run(dist, params):  # every call compiled as one program
        xs, lp = dist.sample_and_log_prob(seed=key, sample_shape=7)
        return dict(lp_dist=dist.log_prob(x), lp_flow=flow.log_prob(params, x), xs=xs, lp=lp,
                    sample=flow.sample(params, key, (7,)), lp_xs=flow.log_prob(params, xs))

    out = run(dist, params)
    np.testing.assert_allclose(out["lp_dist"], out["lp_flow"], rtol=1e-5, atol=1e-5)
    # the same key gives the same base draws, hence the same samples
    np.testing.assert_allclose(out["xs"], out["sample"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["lp"], out["lp_xs"], rtol=1e-4, atol=1e-4)


def test_learned_diag_base_is_converted():
    flow = jaxflows.maf(DIM, num_layers=1, hidden=(8,), base="diag_normal")
    params = flow.init(jax.random.PRNGKey(0))
    params["base"] = {"loc": jnp.arange(DIM, dtype=jnp.float32), "log_scale": jnp.full((DIM,), 0.5)}
    dist = interop.to_distrax(flow, params)
    np.testing.assert_allclose(dist.distribution.loc, np.arange(DIM))
    np.testing.assert_allclose(dist.distribution.scale_diag, np.exp(0.5) * np.ones(DIM), rtol=1e-6)
    x = _points(jax.random.PRNGKey(1))
    np.testing.assert_allclose(_call(dist, "log_prob", x), jax.jit(flow.log_prob)(params, x),
                               rtol=1e-5, atol=1e-5)


def test_conditional_flow_with_fixed_context():
    flow = jaxflows.maf(DIM, num_layers=2, hidden=(16,), context_dim=2)
    params = _perturb(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.3)
    x = _points(jax.random.PRNGKey(2))
    c1, c2 = jnp.array([1.0, -1.0]), jnp.array([-2.0, 0.5])
    d1, d2 = interop.to_distrax(flow, params, context=c1), interop.to_distrax(flow, params, context=c2)
    lp1, lp2, lp_flow = jax.jit(lambda d1, d2, p: (d1.log_prob(x), d2.log_prob(x), flow.log_prob(p, x, c1)))(
        d1, d2, params)  # one compile
    np.testing.assert_allclose(lp1, lp_flow, rtol=1e-5, atol=1e-5)
    assert not np.allclose(lp1, lp2, atol=1e-3)
    with pytest.raises(ValueError, match="conditional"):
        interop.to_distrax(flow, params)


def test_distrax_base_in_a_flow():
    normal = distrax.Normal(jnp.linspace(-1.0, 1.0, DIM), 0.5 * jnp.ones(DIM))  # scalar, batch (DIM,)
    base = interop.distrax_base(normal, DIM)
    assert isinstance(base, jaxflows.Distribution) and base.dim == DIM
    bij = jaxflows.maf(DIM, num_layers=2, hidden=(16,)).bijector
    flow = jaxflows.transformed(bij, base, dim=DIM)
    # mild params: a random MAF's sequential sampling pass can blow up (x ~ 1e8)
    params = _perturb(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.1)
    x = _points(jax.random.PRNGKey(2))
    # and back to distrax: the base is wrapped
    dist = interop.to_distrax(flow, params)
    assert not isinstance(dist.distribution, distrax.MultivariateNormalDiag)

    @jax.jit
    def run(params, dist):  # every call compiled as one program
        z, ld = jax.vmap(jax.vmap(lambda xi: bij.inverse(params["bijector"], xi)))(x)
        xs, lp = flow.sample_and_log_prob(params, jax.random.PRNGKey(3), (6,))
        return dict(expected=jnp.sum(normal.log_prob(z), axis=-1) + ld, lp_x=flow.log_prob(params, x),
                    xs=xs, lp=lp, lp_xs=flow.log_prob(params, xs), lp_dist=dist.log_prob(x))

    out = run(params, dist)
    np.testing.assert_allclose(out["lp_x"], out["expected"], rtol=1e-5, atol=1e-5)
    assert out["xs"].shape == (6, DIM)
    np.testing.assert_allclose(out["lp"], out["lp_xs"], rtol=1e-4, atol=1e-4)
    # the numbers agree
    np.testing.assert_allclose(out["lp_dist"], out["lp_x"], rtol=1e-5, atol=1e-5)


def test_errors():
    with pytest.raises(TypeError, match="distrax.Distribution"):
        interop.distrax_base(jaxflows.standard_normal(2))
    with pytest.raises(ValueError, match="expected dim=3"):
        interop.distrax_base(distrax.MultivariateNormalDiag(jnp.zeros(2)), 3)
    with pytest.raises(ValueError, match="event_shape"):
        interop.distrax_base(distrax.Normal(jnp.zeros((2, 2)), 1.0))
    with pytest.raises(TypeError, match="Bijector or Flow"):
        interop.to_distrax(lambda x: x, {})
    flow = jaxflows.maf(2, num_layers=1, hidden=(4,))
    with pytest.raises(ValueError, match="flow's params"):
        interop.to_distrax(flow, flow.init(jax.random.PRNGKey(0))["bijector"])
    bij = interop.to_distrax(elementwise_affine(2), elementwise_affine(2).init(None))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        bij.forward(jnp.zeros((5, 3)))
    assert interop.is_distrax_distribution(distrax.Normal(0.0, 1.0))
    assert not interop.is_distrax_distribution(jaxflows.standard_normal(2))
