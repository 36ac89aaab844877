"""Flows (``jaxflows.flows``): a bijector and a base as one ``Flow``, built by ``transformed``.

Closed forms, the consistency of the Flow API, batching and broadcasting, tiles, and the errors
at its public edges, all on hand-built flows; the model zoo (maf, iaf, realnvp, nsf) is tested in
test_models.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import jaxflows as jf
from jaxflows import bijectors as B
from jaxflows.batching import map_events, static_shape
from jaxflows.testing import perturb_params


def _hand_built_flow(kind, dim=3, context_dim=None):
    """Two MAF (or IAF) layers, natural and reversed order, made a flow by ``transformed``."""
    make = B.maf_layer if kind == "maf" else B.iaf_layer
    bij = B.chain(make(dim, hidden=(8, 8), context_dim=context_dim),
                  make(dim, hidden=(8, 8), context_dim=context_dim, order=np.arange(dim)[::-1]))
    flow = jf.transformed(bij, "normal", dim=dim, context_dim=context_dim)
    params = perturb_params(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.3)
    return flow, params


# --- a linear Gaussian autoregressive layer is a multivariate normal (MAF paper, section 3) ----

def _linear_gaussian_layer(kind, dim, seed):
    """One affine AR layer with mu linear in the earlier variables and constant sigma."""
    layer = B.maf_layer(dim, hidden=()) if kind == "maf" else B.iaf_layer(dim, hidden=())
    flow = jf.transformed(layer, "normal", dim=dim)
    params = flow.init(jax.random.PRNGKey(seed))
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(dim, 2 * dim))
    w[:, 1::2] = 0.0  # the scale logits do not depend on the inputs: sigma is constant
    b = rng.normal(size=2 * dim)
    params["bijector"]["out"] = {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}
    mask = np.asarray(jf.nn.masks(jf.nn.made_config(dim, (), 2), np.arange(dim))[-1])
    W = (w * mask)[:, 0::2]  # W[j, i]: weight of variable j in mu_i
    mu0 = b[0::2]
    sigma = np.log1p(np.exp(b[1::2] + np.log(np.expm1(1 - 1e-3)))) + 1e-3
    return flow, params, W.T, mu0, sigma  # Bmat[i, j] = weight of x_j in mu_i


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_linear_gaussian_autoregressive_layer_is_multivariate_normal(kind):
    dim = 4
    flow, params, Bmat, mu0, sigma = _linear_gaussian_layer(kind, dim, seed=3)
    assert np.allclose(np.triu(Bmat), 0), "mu_i may only read earlier variables"
    if kind == "maf":  # z = B x + mu0 + sigma * x = M x + mu0  ->  x = M^-1 (z - mu0)
        Minv = np.linalg.inv(Bmat + np.diag(sigma))
        mean, cov = -Minv @ mu0, Minv @ Minv.T
    else:  # x = B z + mu0 + sigma * z = (B + diag sigma) z + mu0
        M = Bmat + np.diag(sigma)
        mean, cov = mu0, M @ M.T
    x = np.random.default_rng(0).normal(size=(50, dim)).astype(np.float32) * 2
    want = scipy.stats.multivariate_normal(mean, cov).logpdf(x)
    got = np.asarray(jax.jit(flow.log_prob)(params, jnp.asarray(x)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # and its samples have that mean and covariance
    sample = jax.jit(flow.sample, static_argnums=2)
    s = np.asarray(sample(params, jax.random.PRNGKey(5), (20000,)), np.float64)
    np.testing.assert_allclose(s.mean(0), mean, atol=0.08 * np.sqrt(np.diag(cov)).max())
    np.testing.assert_allclose(np.cov(s.T), cov, atol=0.06 * np.abs(cov).max())


def test_autoregressive_flow_equals_product_of_gaussian_conditionals():
    """log p(x) = sum_i log N(x_i | m_i(x_<i), s_i(x_<i)^2) for one MAF layer, whose
    density side is z_i = mu_i + sigma_i x_i, so m_i = -mu_i / sigma_i and s_i = 1 / sigma_i."""
    dim = 3
    layer = B.maf_layer(dim, hidden=(9,))
    flow = jf.transformed(layer, "normal", dim=dim)
    params = perturb_params(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.5)
    cfg = jf.nn.made_config(dim, (9,), 2)
    x = jax.random.normal(jax.random.PRNGKey(2), (dim,))

    @jax.jit
    def product_of_conditionals(p, x):
        theta = jf.nn.made_apply(p, x, cfg, np.arange(dim))
        mu = theta[:, 0]
        sigma = jax.nn.softplus(theta[:, 1] + np.log(np.expm1(1 - 1e-3))) + 1e-3
        return jnp.sum(jax.scipy.stats.norm.logpdf(x, -mu / sigma, 1 / sigma))

    want = product_of_conditionals(params["bijector"], x)
    np.testing.assert_allclose(jax.jit(flow.log_prob)(params, x), want, rtol=1e-5, atol=1e-5)


# --- API consistency --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_sample_and_log_prob_agree_and_latents_round_trip(kind):
    flow, params = _hand_built_flow(kind)
    assert flow.config is None and flow.train_log_prob is None
    z = jax.random.normal(jax.random.PRNGKey(3), (5, 3))

    @jax.jit
    def run(params):  # every call compiled as one program
        x, lp = flow.sample_and_log_prob(params, jax.random.PRNGKey(2), (7,))
        xz = flow.from_latent(params, z)
        return dict(x=x, lp=lp, lp_x=flow.log_prob(params, x),
                    sample=flow.sample(params, jax.random.PRNGKey(2), (7,)), xz=xz,
                    z_back=flow.to_latent(params, xz),
                    xz_back=flow.from_latent(params, flow.to_latent(params, xz)))

    out = run(params)
    assert out["x"].shape == (7, 3) and out["lp"].shape == (7,)
    np.testing.assert_allclose(out["lp"], out["lp_x"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["x"], out["sample"], atol=1e-6)
    np.testing.assert_allclose(out["z_back"], z, atol=1e-4)
    np.testing.assert_allclose(out["xz_back"], out["xz"], atol=1e-4)


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_density_integrates_to_one_in_2d(kind):
    flow, params = _hand_built_flow(kind, dim=2)
    g = np.linspace(-20, 20, 601)  # perturbed layers without a scale floor have wide tails
    xx, yy = np.meshgrid(g, g)
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
    mass = float(jnp.sum(jnp.exp(jax.jit(flow.log_prob)(params, pts))) * (g[1] - g[0]) ** 2)
    assert abs(mass - 1) < 0.02


def test_conditional_shapes_and_broadcasting():
    flow, params = _hand_built_flow("maf", dim=2, context_dim=3)
    ctx = jax.random.normal(jax.random.PRNGKey(4), (6, 3))
    x1 = jnp.zeros((5, 2))

    @jax.jit
    def run(params):  # every call compiled as one program
        s = flow.sample(params, jax.random.PRNGKey(0), (4,), context=ctx)
        x, lp2 = flow.sample_and_log_prob(params, jax.random.PRNGKey(1), (), context=ctx)
        return dict(s=s, lp=flow.log_prob(params, s, ctx),  # (4, 6, 2) with (6, 3) broadcasts to (4, 6)
                    one_ctx=flow.log_prob(params, x1, ctx[0]),  # a single context broadcasts over the batch
                    other_ctx=flow.log_prob(params, x1, ctx[1]),
                    x=x, lp2=lp2, lp_x=flow.log_prob(params, x, ctx))

    out = run(params)
    assert out["s"].shape == (4, 6, 2), "sample_shape samples per context row: sample_shape + (B, dim)"
    assert out["lp"].shape == (4, 6)
    assert out["one_ctx"].shape == (5,)
    assert not np.allclose(out["one_ctx"], out["other_ctx"]), "context must change the density"
    assert out["x"].shape == (6, 2)
    np.testing.assert_allclose(out["lp2"], out["lp_x"], atol=1e-4)


def test_tiles_give_the_same_values_as_one_vmap():
    """forward_tile / inverse_tile map a batch in tiles (lax.map) instead of one vmap."""
    flow, params = _hand_built_flow("maf", dim=3, context_dim=2)
    tiled = jf.transformed(flow.bijector, flow.base, dim=3, context_dim=2, forward_tile=4, inverse_tile=4)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 3))  # 10 events: two full tiles and a part
    ctx = jax.random.normal(jax.random.PRNGKey(2), (5, 2))

    @jax.jit
    def run(params):  # both flows' calls compiled as one program
        return [dict(lp=f.log_prob(params, x, ctx), z=f.to_latent(params, x, ctx),
                     draw=f.sample_and_log_prob(params, jax.random.PRNGKey(3), (3,), ctx))
                for f in (tiled, flow)]

    a, b = run(params)
    np.testing.assert_allclose(a["lp"], b["lp"], atol=1e-5)
    np.testing.assert_allclose(a["z"], b["z"], atol=1e-5)
    np.testing.assert_allclose(a["draw"][0], b["draw"][0], atol=1e-5)
    np.testing.assert_allclose(a["draw"][1], b["draw"][1], atol=1e-4)


def test_map_events_broadcasts_and_keeps_the_batch_shape():
    x = jnp.arange(12.0).reshape(2, 2, 3)
    ctx = jnp.ones((2, 1))  # broadcasts against the batch (2, 2)
    out = map_events(lambda xi, ci: (xi.sum() + ci[0], xi * 2), x, ctx)
    assert out[0].shape == (2, 2) and out[1].shape == (2, 2, 3)
    np.testing.assert_allclose(out[0], x.sum(-1) + 1)
    tiled = map_events(lambda xi, ci: xi.sum() + ci[0], x, ctx, tile=3)
    np.testing.assert_allclose(tiled, out[0])
    with pytest.raises(ValueError, match="do not broadcast"):
        map_events(lambda xi, ci: xi, x, jnp.ones((3, 1)))


def test_sample_shape_must_be_static():
    assert static_shape(3) == (3,) and static_shape((2, np.int64(4))) == (2, 4) and static_shape(()) == ()
    with pytest.raises(ValueError, match="non-negative"):
        static_shape((-1,))
    with pytest.raises(TypeError, match="int or a tuple of ints"):
        static_shape((2.5,))
    flow, params = _hand_built_flow("maf", dim=2)
    with pytest.raises(TypeError, match="static_argnums=2"):
        jax.jit(flow.sample)(params, jax.random.PRNGKey(0), 4)
    x = jax.jit(flow.sample, static_argnums=2)(params, jax.random.PRNGKey(0), 4)
    assert x.shape == (4, 2)


# --- errors at the public edges ---------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    flow, params = _hand_built_flow("maf", dim=2)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\), got shape \(4, 3\)"):
        flow.log_prob(params, jnp.zeros((4, 3)))
    with pytest.raises(TypeError, match="x must be a floating-point array.*int32"):
        flow.log_prob(params, jnp.zeros((4, 2), jnp.int32))
    with pytest.raises(ValueError, match="takes no context"):
        flow.log_prob(params, jnp.zeros((4, 2)), jnp.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"z must have shape \(\.\.\., 2\)"):
        flow.from_latent(params, jnp.zeros(3))
    # the checks are static, so they fire under jit too
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        jax.jit(flow.log_prob)(params, jnp.zeros((4, 5)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        jf.fit(flow, params, np.array([[0.0, 1.0], [np.nan, 0.0]] * 4), key=jax.random.PRNGKey(0), num_epochs=1)
    with pytest.raises(ValueError, match=r"data must have shape \(n, 2\)"):
        jf.fit(flow, params, np.zeros((8, 3)), key=jax.random.PRNGKey(0), num_epochs=1)


def test_bad_context_raises_clear_errors():
    flow, params = _hand_built_flow("iaf", dim=2, context_dim=3)
    x = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match=r"conditional \(context_dim=3\).*context=\.\.\. of shape"):
        flow.log_prob(params, x)
    with pytest.raises(ValueError, match=r"context must have shape \(\.\.\., 3\), got shape \(4, 2\)"):
        flow.log_prob(params, x, jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="do not broadcast"):
        flow.log_prob(params, x, jnp.zeros((5, 3)))
    with pytest.raises(TypeError, match="context must be a floating-point array"):
        flow.sample(params, jax.random.PRNGKey(0), (2,), context=jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="conditional"):
        flow.sample(params, jax.random.PRNGKey(0), (2,))
