"""Flows: closed forms, consistency of the API, training, determinism, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import jaxflows as jf
from jaxflows import bijectors as B
from jaxflows.data import two_moons
from jaxflows.testing import perturb_params

FACTORIES = {"maf": jf.maf, "iaf": jf.iaf}


def _random_flow(name, dim=3, context_dim=None, **kw):
    flow = FACTORIES[name](dim, num_layers=3, hidden=(8, 8), context_dim=context_dim, **kw)
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
    got = np.asarray(flow.log_prob(params, jnp.asarray(x)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # and its samples have that mean and covariance
    s = np.asarray(flow.sample(params, jax.random.PRNGKey(5), (20000,)), np.float64)
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
    theta = jf.nn.made_apply(params["bijector"], x, cfg, np.arange(dim))
    mu = theta[:, 0]
    sigma = jax.nn.softplus(theta[:, 1] + np.log(np.expm1(1 - 1e-3))) + 1e-3
    want = jnp.sum(jax.scipy.stats.norm.logpdf(x, -mu / sigma, 1 / sigma))
    np.testing.assert_allclose(flow.log_prob(params, x), want, rtol=1e-5, atol=1e-5)


# --- API consistency --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_sample_and_log_prob_agrees_with_log_prob(name):
    flow, params = _random_flow(name)
    x, lp = flow.sample_and_log_prob(params, jax.random.PRNGKey(2), (7,))
    assert x.shape == (7, 3) and lp.shape == (7,)
    np.testing.assert_allclose(lp, flow.log_prob(params, x), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(x, flow.sample(params, jax.random.PRNGKey(2), (7,)), atol=1e-6)


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_latent_round_trips(name):
    flow, params = _random_flow(name)
    z = jax.random.normal(jax.random.PRNGKey(3), (5, 3))
    x = flow.from_latent(params, z)
    np.testing.assert_allclose(flow.to_latent(params, x), z, atol=1e-4)
    np.testing.assert_allclose(flow.from_latent(params, flow.to_latent(params, x)), x, atol=1e-4)


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_density_integrates_to_one_in_2d(name):
    flow, params = _random_flow(name, dim=2)
    g = np.linspace(-9, 9, 301)
    xx, yy = np.meshgrid(g, g)
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], -1), jnp.float32)
    mass = float(jnp.sum(jnp.exp(flow.log_prob(params, pts))) * (g[1] - g[0]) ** 2)
    assert abs(mass - 1) < 0.02


def test_conditional_shapes_and_broadcasting():
    flow, params = _random_flow("maf", dim=2, context_dim=3)
    ctx = jax.random.normal(jax.random.PRNGKey(4), (6, 3))
    s = flow.sample(params, jax.random.PRNGKey(0), (4,), context=ctx)
    assert s.shape == (4, 6, 2), "sample_shape samples per context row: sample_shape + (B, dim)"
    lp = flow.log_prob(params, s, ctx)  # (4, 6, 2) with (6, 3) broadcasts to (4, 6)
    assert lp.shape == (4, 6)
    x1 = jnp.zeros((5, 2))
    one_ctx = flow.log_prob(params, x1, ctx[0])  # a single context broadcasts over the batch
    assert one_ctx.shape == (5,)
    assert not np.allclose(one_ctx, flow.log_prob(params, x1, ctx[1])), "context must change the density"
    x, lp2 = flow.sample_and_log_prob(params, jax.random.PRNGKey(1), (), context=ctx)
    assert x.shape == (6, 2)
    np.testing.assert_allclose(lp2, flow.log_prob(params, x, ctx), atol=1e-4)


def test_same_keys_same_results():
    flow = jf.maf(2, num_layers=2, hidden=(8,))
    p1, p2 = flow.init(jax.random.PRNGKey(7)), flow.init(jax.random.PRNGKey(7))
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(flow.sample(p1, jax.random.PRNGKey(1), (4,)),
                                  flow.sample(p2, jax.random.PRNGKey(1), (4,)))
    data = two_moons(0, 256)
    f1, _ = jf.fit(flow, p1, data, key=jax.random.PRNGKey(3), num_epochs=2, batch_size=64)
    f2, _ = jf.fit(flow, p2, data, key=jax.random.PRNGKey(3), num_epochs=2, batch_size=64)
    for a, b in zip(jax.tree_util.tree_leaves(f1), jax.tree_util.tree_leaves(f2)):
        np.testing.assert_array_equal(a, b)


def test_random_permutation_is_configuration():
    a = jf.maf(4, num_layers=3, hidden=(8,), permutation="random", permutation_seed=5)
    b = jf.from_config(a.config)
    c = jf.maf(4, num_layers=3, hidden=(8,), permutation="random", permutation_seed=6)
    params = perturb_params(a.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.5)
    x = jax.random.normal(jax.random.PRNGKey(2), (3, 4))
    np.testing.assert_array_equal(a.log_prob(params, x), b.log_prob(params, x))
    assert not np.allclose(a.log_prob(params, x), c.log_prob(params, x))


def test_stacked_flow_equals_explicit_chain_of_layers():
    """The folded per-layer orders equal MAF layers with reverse permutations between them."""
    dim, n = 3, 3
    flow = jf.maf(dim, num_layers=n, hidden=(6,), permutation="reverse", min_scale=1e-3,
                  input_bound=None)  # the settings of a plain maf_layer
    params = perturb_params(flow.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.5)
    layer = B.maf_layer(dim, hidden=(6,))
    rev = B.reverse(dim)
    parts, chain_params = [], []
    for l in range(n):
        p_l = jax.tree_util.tree_map(lambda a: a[l], params["bijector"])
        if l % 2 == 1:
            # a reversed-order layer == reverse . natural-order layer . reverse, with the
            # weights that read inputs and the outputs re-indexed by the permutation
            p_l = {"hidden": ({**p_l["hidden"][0], "w": p_l["hidden"][0]["w"][::-1]},),
                   "out": {"w": p_l["out"]["w"].reshape(6, dim, 2)[:, ::-1].reshape(6, 2 * dim),
                           "b": p_l["out"]["b"].reshape(dim, 2)[::-1].reshape(2 * dim)}}
            parts += [rev, layer, rev]
            chain_params += [{}, p_l, {}]
        else:
            parts.append(layer)
            chain_params.append(p_l)
    ref = B.chain(*parts)
    x = jax.random.normal(jax.random.PRNGKey(2), (dim,))
    z_ref, ld_ref = ref.inverse(tuple(chain_params), x)
    z, ld = flow.bijector.inverse(params["bijector"], x)
    np.testing.assert_allclose(z, z_ref, atol=1e-5)
    np.testing.assert_allclose(ld, ld_ref, atol=1e-5)


# --- training ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_fit_beats_best_gaussian_on_two_moons(name):
    train, test = two_moons(0, 2000), two_moons(1, 1000)
    gauss = scipy.stats.multivariate_normal(train.mean(0), np.cov(train.T))
    gauss_nll = -gauss.logpdf(test).mean()
    flow = FACTORIES[name](2, num_layers=4, hidden=(32, 32))
    params = flow.init(jax.random.PRNGKey(0))
    import optax
    params, hist = jf.fit(flow, params, train, key=jax.random.PRNGKey(1), num_epochs=40,
                          batch_size=100, optimizer=optax.adam(2e-3), patience=None, progress=False)
    nll = -float(jnp.mean(flow.log_prob(params, test)))
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    assert nll < gauss_nll - 0.2, f"flow NLL {nll:.3f} vs best Gaussian {gauss_nll:.3f}"


# --- errors at the public edges ---------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    flow, params = _random_flow("maf", dim=2)
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
    flow, params = _random_flow("iaf", dim=2, context_dim=3)
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


def test_bad_configuration():
    with pytest.raises(ValueError, match="permutation must be"):
        jf.maf(3, permutation="shuffle")
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        jf.iaf(0)
    with pytest.raises(ValueError, match="hidden width 2 is smaller"):
        jf.maf(5, hidden=(2,))
