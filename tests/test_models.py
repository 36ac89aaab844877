"""The model zoo (``jaxflows.models``): every factory through the Flow API,
normalisation, bases, configs, determinism, training, and -- for every factory --
that the context reaches every conditioner (flowjax #147)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

import jaxflows as jf
import jaxflows.models as models
from jaxflows import bijectors as B
from jaxflows._types import Bijector
from jaxflows.bijectors import maf_layer
from jaxflows.data import two_moons
from jaxflows.flows import transformed
from jaxflows.testing import perturb_params

KEY = jax.random.PRNGKey(0)
SMALL = dict(num_layers=2, hidden=(8,))
# every factory, plus the variants whose conditioners differ
VARIANTS = {
    "maf": dict(factory="maf"),
    "iaf": dict(factory="iaf"),
    "realnvp": dict(factory="realnvp"),
    "nsf": dict(factory="nsf", num_bins=4),
    "nsf_coupling": dict(factory="nsf", num_bins=4, coupling_layers=True),
    "maf_batch_norm_mog": dict(factory="maf", batch_norm=True, base="mog"),
    "realnvp_batch_norm": dict(factory="realnvp", batch_norm=True, mask="half"),
}


def build(variant, **extra):
    kw = dict(VARIANTS[variant])
    factory = models.FACTORIES[kw.pop("factory")]
    return factory(extra.pop("dim", 3), **SMALL, **kw, **extra)


def test_every_factory_is_covered():
    assert {v["factory"] for v in VARIANTS.values()} == set(models.FACTORIES)


def assert_context_matters(flow, params, x, key=jax.random.PRNGKey(5)):
    """log p(x | c) must change with c, and the context must reach EVERY layer's
    conditioner: each stacked layer's context weights get a non-zero gradient."""
    c1 = jax.random.normal(key, (flow.context_dim,))
    c2 = -c1 + 1.0
    log_prob = jax.jit(flow.log_prob)
    lp1, lp2 = log_prob(params, x, c1), log_prob(params, x, c2)
    assert np.all(np.isfinite(lp1)) and np.all(np.isfinite(lp2))
    assert np.max(np.abs(lp1 - lp2)) > 1e-3, "log_prob does not depend on the context"
    sample = jax.jit(flow.sample, static_argnums=2)
    s1 = sample(params, jax.random.PRNGKey(1), (4,), c1)
    s2 = sample(params, jax.random.PRNGKey(1), (4,), c2)
    assert np.max(np.abs(s1 - s2)) > 1e-3, "samples do not depend on the context"
    grads = jax.jit(jax.grad(lambda p: jnp.sum(flow.log_prob(p, x, c1))))(params)
    ctx_leaves = [g for path, g in jax.tree_util.tree_flatten_with_path(grads["bijector"])[0]
                  if str(path[-1]) == "['c']"]
    assert ctx_leaves, "no context weights ('c') found in the conditioners"
    per_layer = sum(np.abs(np.asarray(g)).reshape(g.shape[0], -1).sum(1) for g in ctx_leaves)
    assert np.all(per_layer > 0), f"context ignored by layer(s) {np.flatnonzero(per_layer == 0)}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_context_changes_the_density(variant):
    flow = build(variant, context_dim=2)
    assert flow.context_dim == 2
    params = perturb_params(flow.init(KEY), jax.random.PRNGKey(1), 0.2)
    x = jax.random.normal(jax.random.PRNGKey(2), (6, 3))
    assert_context_matters(flow, params, x)
    # batched contexts: one row per event
    ctx = jax.random.normal(jax.random.PRNGKey(3), (6, 2))
    log_prob = jax.jit(flow.log_prob)
    lp = log_prob(params, x, ctx)
    lp0 = jnp.stack([log_prob(params, x[i], ctx[i]) for i in range(6)])
    np.testing.assert_allclose(lp, lp0, rtol=1e-4, atol=1e-4)
    xs, lps = jax.jit(flow.sample_and_log_prob, static_argnums=2)(params, KEY, (5,), ctx[:2])
    assert xs.shape == (5, 2, 3)
    np.testing.assert_allclose(lps, log_prob(params, xs, ctx[:2]), rtol=1e-3, atol=1e-3)


def test_context_check_catches_a_conditioner_that_ignores_its_context():
    """The flowjax #147 bug class: a flow declares a context but drops it."""
    inner = maf_layer(3, hidden=(8,))  # unconditional conditioner
    buggy = Bijector(inner.init, lambda p, x, c=None: inner.forward(p, x),
                     lambda p, y, c=None: inner.inverse(p, y))
    flow = transformed(buggy, "normal", dim=3, context_dim=2)
    params = perturb_params(flow.init(KEY), jax.random.PRNGKey(1), 0.2)
    with pytest.raises(AssertionError, match="does not depend on the context"):
        assert_context_matters(flow, params, jnp.ones((2, 3)))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_flow_api_roundtrips_and_config(variant):
    flow = build(variant)
    params = perturb_params(flow.init(KEY), jax.random.PRNGKey(1), 0.2)
    rebuilt = models.from_config(flow.config)
    assert rebuilt.config == flow.config
    x = 1.5 * jax.random.normal(jax.random.PRNGKey(2), (7, 3))
    z0 = jax.random.normal(jax.random.PRNGKey(3), (5, 3))

    @jax.jit
    def run(params):  # every call compiled as one program
        xs, lps = flow.sample_and_log_prob(params, KEY, (2, 3))
        return dict(x_back=flow.from_latent(params, flow.to_latent(params, x)),
                    z0_back=flow.to_latent(params, flow.from_latent(params, z0)),
                    xs=xs, lps=lps, lp_xs=flow.log_prob(params, xs), sample=flow.sample(params, KEY, (2, 3)),
                    lp=flow.log_prob(params, x), lp_rebuilt=rebuilt.log_prob(params, x))

    out = run(params)
    np.testing.assert_allclose(out["x_back"], x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["z0_back"], z0, atol=1e-4)
    assert out["xs"].shape == (2, 3, 3) and out["lps"].shape == (2, 3)
    np.testing.assert_allclose(out["lps"], out["lp_xs"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(out["sample"], out["xs"], rtol=1e-5, atol=1e-6)  # float32 round-off
    np.testing.assert_allclose(out["lp_rebuilt"], out["lp"], rtol=1e-6)


@pytest.mark.parametrize("variant", ["maf", "iaf", "realnvp", "nsf", "nsf_coupling", "maf_batch_norm_mog"])
def test_density_integrates_to_one(variant):
    flow = build(variant, dim=2)
    params = perturb_params(flow.init(KEY), jax.random.PRNGKey(1), 0.15)
    g = np.linspace(-12, 12, 241)
    xx = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2).astype(np.float32)
    mass = float(jnp.sum(jnp.exp(jax.jit(flow.log_prob)(params, xx)))) * (g[1] - g[0]) ** 2
    assert abs(mass - 1.0) < 0.02, mass


def test_factory_errors():
    with pytest.raises(ValueError, match="mask must be 'alternate' or 'half'"):
        models.realnvp(3, mask="checkerboard")
    with pytest.raises(ValueError, match="residual=True applies to the autoregressive NSF"):
        models.nsf(3, coupling_layers=True, residual=True)
    with pytest.raises(ValueError, match="context_dim must be None or a positive integer"):
        models.realnvp(3, context_dim=0)
    with pytest.raises(ValueError, match="num_bins"):
        models.nsf(3, num_bins=0)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        models.nsf(0)
    with pytest.raises(ValueError, match="permutation must be"):
        jf.maf(3, permutation="shuffle")
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        jf.iaf(0)
    with pytest.raises(ValueError, match="hidden width 2 is smaller"):
        jf.maf(5, hidden=(2,))


@pytest.mark.parametrize("variant", ["realnvp", "nsf_coupling"])
def test_fit_learns_a_correlated_gaussian(variant):
    from jaxflows import fit

    rng = np.random.default_rng(0)
    data = rng.normal(size=(1024, 2)).astype(np.float32) @ np.array([[1.0, 0.8], [0.0, 0.6]], np.float32)
    flow = build(variant, dim=2)
    params, hist = fit(flow, flow.init(KEY), data, key=KEY, batch_size=128, num_epochs=30,
                       optimizer=optax.adam(5e-3))
    # exact NLL of the data-generating Gaussian is about 2.33 nats
    true_nll = -np.mean(np.log(np.asarray(jax.scipy.stats.multivariate_normal.pdf(
        data, np.zeros(2), np.array([[1.0, 0.8], [0.8, 1.0]])))))
    final = -float(jnp.mean(jax.jit(flow.log_prob)(params, data)))
    assert final < hist["train_loss"][0] and final < true_nll + 0.15, (final, true_nll)


# --- determinism, configuration, the stacked layers, training ---------------------------------

def test_same_keys_same_results():
    flow = jf.maf(2, num_layers=2, hidden=(8,))
    p1, p2 = flow.init(jax.random.PRNGKey(7)), flow.init(jax.random.PRNGKey(7))
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2)):
        np.testing.assert_array_equal(a, b)
    sample = jax.jit(flow.sample, static_argnums=2)
    np.testing.assert_array_equal(sample(p1, jax.random.PRNGKey(1), (4,)),
                                  sample(p2, jax.random.PRNGKey(1), (4,)))
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
    lp_a, lp_b, lp_c = jax.jit(lambda p: [f.log_prob(p, x) for f in (a, b, c)])(params)  # one compile
    np.testing.assert_array_equal(lp_a, lp_b)
    assert not np.allclose(lp_a, lp_c)


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
    (z_ref, ld_ref), (z, ld) = jax.jit(lambda cp, p: (ref.inverse(cp, x), flow.bijector.inverse(p, x)))(
        tuple(chain_params), params["bijector"])  # one compile
    np.testing.assert_allclose(z, z_ref, atol=1e-5)
    np.testing.assert_allclose(ld, ld_ref, atol=1e-5)


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_fit_beats_best_gaussian_on_two_moons(name):
    train, test = two_moons(0, 2000), two_moons(1, 1000)
    gauss = scipy.stats.multivariate_normal(train.mean(0), np.cov(train.T))
    gauss_nll = -gauss.logpdf(test).mean()
    flow = models.FACTORIES[name](2, num_layers=4, hidden=(32, 32))
    params = flow.init(jax.random.PRNGKey(0))
    # the best-validation params: an IAF's training loss can spike late at this step size
    params, hist = jf.fit(flow, params, train, key=jax.random.PRNGKey(1), num_epochs=40,
                          batch_size=100, optimizer=optax.adam(2e-3), patience=None, progress=False,
                          val_data=two_moons(2, 500))
    nll = -float(jnp.mean(jax.jit(flow.log_prob)(params, test)))
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    assert nll < gauss_nll - 0.2, f"flow NLL {nll:.3f} vs best Gaussian {gauss_nll:.3f}"


def test_maf_init_schemes_and_configs_saved_before_the_uniform_default():
    """jf.maf draws its hidden layers from U(±1/sqrt(fan_in)) by default, "normal" gives
    N(0, 1/fan_in) weights with U(-1, 1) biases; the output layer is zero either way, and a
    config without ``init`` (saved before the default changed) rebuilds with "normal"."""
    key = jax.random.PRNGKey(0)
    uni = jf.maf(8, num_layers=2, hidden=(256,))
    nor = jf.maf(8, num_layers=2, hidden=(256,), init="normal")
    pu, pn = uni.init(key)["bijector"], nor.init(key)["bijector"]
    lim = 1 / np.sqrt(8)
    for p in (pu, pn):
        assert not np.any(np.asarray(p["out"]["w"])) and not np.any(np.asarray(p["out"]["b"]))
    assert np.abs(np.asarray(pu["hidden"][0]["w"])).max() <= lim
    assert np.abs(np.asarray(pu["hidden"][0]["b"])).max() <= lim
    assert np.abs(np.asarray(pn["hidden"][0]["b"])).max() > 0.9  # U(-1, 1)
    assert np.std(np.asarray(pn["hidden"][0]["w"])) == pytest.approx(lim, rel=0.1)
    assert uni.config["kwargs"]["init"] == "uniform"
    old = {"factory": "maf", "kwargs": {k: v for k, v in uni.config["kwargs"].items()
                                         if k not in ("init", "input_bound")}}
    assert jf.from_config(old).config["kwargs"]["init"] == "normal"
    with pytest.raises(ValueError, match="init must be one of"):
        jf.maf(8, init="xavier")
