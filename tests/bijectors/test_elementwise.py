"""Element-wise bijectors (jaxflows/bijectors/elementwise.py): the affine transformer,
``elementwise``/``elementwise_affine`` and ``logit`` (the generic checks live in
test_conformance)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxflows as jf
from jaxflows.bijectors import chain, elementwise, elementwise_affine, logit
from jaxflows.bijectors.elementwise import affine
from jaxflows.bijectors.spline import elementwise_spline, rational_quadratic_spline
from jaxflows.testing import perturb_params

KEY = jax.random.PRNGKey(0)


def test_elementwise_affine_formula_and_identity_at_init():
    """x_i = mu_i + sigma_i z_i with sigma = softplus(s + c) + min_scale (sigma = 1 at s = 0)."""
    b = elementwise_affine(3, min_scale=1e-2)
    z = jnp.array([0.5, -1.0, 2.0])
    p0 = b.init(KEY)
    assert p0["theta"].shape == (3, 2)
    x0, ld0 = b.forward(p0, z)
    np.testing.assert_allclose(x0, z, rtol=1e-6)
    assert abs(float(ld0)) < 1e-6
    p = perturb_params(p0, jax.random.PRNGKey(1), 1.0)
    mu, s = np.asarray(p["theta"][:, 0]), np.asarray(p["theta"][:, 1])
    sigma = np.logaddexp(0.0, s + np.log(np.expm1(1.0 - 1e-2))) + 1e-2
    x, ld = b.forward(p, z)
    np.testing.assert_allclose(x, mu + sigma * np.asarray(z), rtol=1e-5)
    np.testing.assert_allclose(ld, np.sum(np.log(sigma)), rtol=1e-5)
    z_back, ld_inv = b.inverse(p, x)
    np.testing.assert_allclose(z_back, z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ld_inv, -ld, rtol=1e-5)
    with pytest.raises(ValueError, match=r"min_scale must be in \(0, 1\)"):
        affine(0.0)


def test_elementwise_spline_is_elementwise_of_the_spline_transformer():
    """elementwise_spline(dim, K, B) and elementwise(rational_quadratic_spline(K, B), dim)
    have the same params and compute the same maps; only the name in messages differs."""
    spline_bij = elementwise_spline(4, num_bins=3, bound=2.0)
    generic = elementwise(rational_quadratic_spline(3, 2.0), 4)
    p = spline_bij.init(KEY)
    assert jax.tree_util.tree_structure(p) == jax.tree_util.tree_structure(generic.init(KEY))
    p = perturb_params(p, jax.random.PRNGKey(2), 1.0)
    v = jnp.array([-2.5, -0.3, 0.4, 1.9])
    for direction in ("forward", "inverse"):
        got = getattr(spline_bij, direction)(p, v)
        want = getattr(generic, direction)(p, v)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert not np.allclose(got[0], v)
    with pytest.raises(ValueError, match=r"elementwise_spline\.forward: z must be one event of shape \(4,\)"):
        spline_bij.forward(p, jnp.zeros(3))
    with pytest.raises(ValueError, match=r"elementwise\.forward: z must be one event of shape \(4,\)"):
        generic.forward(p, jnp.zeros(3))
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        elementwise(rational_quadratic_spline(3), 0)


def test_logit_bijector_matches_the_report_preprocessing_and_counts_its_log_det():
    """logit(dim, scale=256) is the MNIST preprocessing: z = logit(a + (1-2a) x/256) with
    log|dz/dx| = sum log(1-2a) - log 256 - log s - log(1-s); a flow chained with it
    scores pixels in their own units."""
    a = 1e-6
    x = np.random.default_rng(0).uniform(0, 256, size=(5, 3))
    s = a + (1 - 2 * a) * x / 256
    want_y = np.log(s) - np.log1p(-s)
    want_ld = np.sum(np.log1p(-2 * a) - np.log(256.0) - np.log(s) - np.log1p(-s), axis=1)
    b = logit(3, alpha=a, scale=256.0)
    y, ld = jax.vmap(lambda v: b.inverse({}, v))(jnp.asarray(x))
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ld, want_ld, rtol=1e-5)
    flow = jf.transformed(chain(jf.maf(3, num_layers=1, hidden=(8,)).bijector, b), "normal", dim=3)
    params = flow.init(jax.random.PRNGKey(0))
    base_lp = jax.scipy.stats.norm.logpdf(want_y).sum(1)  # identity MAF at init
    np.testing.assert_allclose(flow.log_prob(params, jnp.asarray(x)), base_lp + want_ld, rtol=1e-4)
    with pytest.raises(ValueError, match="alpha must be in"):
        logit(3, alpha=0.5)
