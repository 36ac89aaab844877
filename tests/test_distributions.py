"""Base distributions against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import jaxflows as jf
from jaxflows.distributions import make_base, mixture_of_gaussians


def test_standard_normal_matches_scipy_and_samples():
    d = jf.standard_normal(3)
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    got = jax.vmap(lambda v: d.log_prob({}, v))(jnp.asarray(x))
    np.testing.assert_allclose(got, scipy.stats.multivariate_normal(np.zeros(3)).logpdf(x), rtol=1e-5)
    s = d.sample({}, jax.random.PRNGKey(0), (4000, 2))
    assert s.shape == (4000, 2, 3)
    assert abs(float(s.mean())) < 0.05 and abs(float(s.std()) - 1) < 0.05


def test_diag_normal_with_learnt_params_matches_scipy():
    d = jf.diag_normal(2)
    p = {"loc": jnp.array([1.0, -2.0]), "log_scale": jnp.array([0.5, -1.0])}
    x = jnp.array([0.3, -1.7])
    want = scipy.stats.norm(p["loc"], np.exp(p["log_scale"])).logpdf(x).sum()
    np.testing.assert_allclose(d.log_prob(p, x), want, rtol=1e-5)
    s = d.sample(p, jax.random.PRNGKey(1), (20000,))
    np.testing.assert_allclose(s.mean(0), p["loc"], atol=0.05)
    np.testing.assert_allclose(s.std(0), np.exp(p["log_scale"]), rtol=0.05)
    g = jax.grad(lambda q: d.log_prob(q, x))(p)  # learnable: finite gradients
    assert all(np.all(np.isfinite(v)) for v in jax.tree_util.tree_leaves(g))


def test_uniform_box():
    d = jf.uniform([0.0, -1.0], [2.0, 3.0])
    assert float(d.log_prob({}, jnp.array([1.0, 0.0]))) == pytest.approx(-np.log(8.0))
    assert float(d.log_prob({}, jnp.array([2.5, 0.0]))) == -np.inf
    s = d.sample({}, jax.random.PRNGKey(0), (5000,))
    assert s.shape == (5000, 2)
    assert np.all((s[:, 0] >= 0) & (s[:, 0] <= 2) & (s[:, 1] >= -1) & (s[:, 1] <= 3))
    np.testing.assert_allclose(s.mean(0), [1.0, 1.0], atol=0.06)
    with pytest.raises(ValueError, match="high > low"):
        jf.uniform([0.0], [0.0])


def test_flow_with_uniform_base_is_a_density_on_the_image_of_the_box():
    flow = jf.transformed(jf.bijectors.elementwise_affine(1), jf.uniform([0.0], [1.0]), dim=1)
    p = flow.init(jax.random.PRNGKey(0))
    p["bijector"]["theta"] = jnp.array([[3.0, 0.0]])  # shift 3, scale 1: uniform on [3, 4]
    np.testing.assert_allclose(flow.log_prob(p, jnp.array([[3.5]])), [0.0], atol=1e-6)
    assert float(flow.log_prob(p, jnp.array([[0.5]]))[0]) == -np.inf


def test_unknown_base_name():
    with pytest.raises(ValueError, match="base must be one of"):
        jf.maf(2, base="cauchy")


def test_mixture_of_gaussians_base():
    base = mixture_of_gaussians(2, 3)
    params = base.init(jax.random.PRNGKey(0))
    assert params["loc"].shape == (3, 2) and np.ptp(np.asarray(params["loc"])) > 0
    params = {"logits": jnp.log(jnp.array([0.2, 0.3, 0.5])),
              "loc": jnp.array([[-3.0, 0.0], [0.0, 3.0], [2.0, -2.0]]),
              "log_scale": jnp.log(jnp.array([[0.5, 1.0], [1.0, 0.3], [0.7, 0.7]]))}
    x = jnp.array([0.4, -1.1])
    from scipy.stats import multivariate_normal as mvn
    want = np.log(sum(w * mvn(m, np.diag(np.exp(2 * s))).pdf(x) for w, m, s in
                      zip([0.2, 0.3, 0.5], np.asarray(params["loc"]), np.asarray(params["log_scale"]))))
    np.testing.assert_allclose(base.log_prob(params, x), want, rtol=1e-5)
    s = base.sample(params, jax.random.PRNGKey(0), (20000,))
    np.testing.assert_allclose(s.mean(0), [0.2 * -3 + 0.5 * 2, 0.3 * 3 + 0.5 * -2], atol=0.05)
    assert make_base("mog", 4).dim == 4
    with pytest.raises(ValueError, match="num_components"):
        mixture_of_gaussians(2, 0)
