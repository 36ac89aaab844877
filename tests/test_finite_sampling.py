"""MAF samples stay finite by design, and the exact-density targets are right.

- ``input_bound`` makes the MADE's outputs bounded functions of its inputs
  (saturation: inputs of 1e20 give the same parameters as inputs at the bound);
  ``input_squash="soft_clip"`` leaves the bulk unchanged, and configs saved
  before it existed rebuild the ``tanh`` clamp.
- One MAF layer maps even absurd latents (1e25) to finite samples, within
  ``(|z| + M) / min_scale``.
- A trained default MAF on digits (the demo's data, smaller budget) draws
  finite samples, essentially none beyond 100 training standard deviations.
- ``jaxflows.targets``: densities integrate to one (2-D grids), samples and
  densities agree (a Gaussian mixture against scipy), KL estimates are ~0 for
  the truth itself.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxflows as jf
from jaxflows import targets as T
from jaxflows.bijectors import maf_layer
from jaxflows.nn import made_apply, made_config, made_init, squash_inputs


def test_bounded_inputs_saturate_the_conditioner():
    cfg = made_config(5, (16, 16), 2, input_bound=3.0)
    params = made_init(jax.random.PRNGKey(0), cfg)
    params = jax.tree_util.tree_map(lambda p: p + 0.3 * jnp.ones_like(p), params)  # non-zero output
    order = np.arange(5)
    huge = made_apply(params, jnp.full(5, 1e20), cfg, order)
    at_bound = made_apply(params, jnp.full(5, 1e3), cfg, order)  # 3 tanh(1e3 / 3) == 3 in float32
    np.testing.assert_allclose(huge, at_bound, rtol=1e-6)
    with pytest.raises(ValueError, match="input_bound"):
        made_config(5, (16,), 2, input_bound=-1.0)


@pytest.mark.parametrize("bound", [0.6, 6.0])
def test_soft_clip_is_the_identity_on_the_bulk_and_bounded_beyond(bound):
    with jax.enable_x64(True):
        x = jnp.linspace(-50 * bound, 50 * bound, 20001, dtype=jnp.float64)
        y = squash_inputs(x, bound, "soft_clip")
        inside = jnp.abs(x) <= 2 * bound / 3
        np.testing.assert_array_equal(y[inside], x[inside])             # unchanged up to the knee
        assert float(jnp.max(jnp.abs(y))) <= bound                        # bounded
        assert bool(jnp.all(jnp.diff(y) >= -1e-14 * bound))  # monotone (XLA's tanh: to an ulp)
        np.testing.assert_array_equal(squash_inputs(-x, bound, "soft_clip"), -y)  # odd
        slope = jax.vmap(jax.grad(lambda v: squash_inputs(v, bound, "soft_clip")))
        knee = 2 * bound / 3
        np.testing.assert_allclose(slope(jnp.array([knee - 1e-6, knee + 1e-6])), 1.0, atol=1e-5)  # no kink
        assert bool(jnp.all(jnp.isfinite(slope(jnp.array([0.0, 1e300, -jnp.inf])))))
        np.testing.assert_allclose(squash_inputs(x, bound, "tanh"), bound * jnp.tanh(x / bound))
    assert squash_inputs(jnp.float32(1e30), bound, "soft_clip").dtype == jnp.float32
    with pytest.raises(ValueError, match="input_squash"):
        made_config(5, (16,), 2, input_bound=bound, input_squash="clip")
    with pytest.raises(ValueError, match="input_squash"):  # checked even with the clamp off
        jf.maf(3, num_layers=1, hidden=(4,), input_bound=None, input_squash="clip")


def test_maf_configs_without_input_squash_rebuild_the_tanh_clamp():
    """A model saved before ``input_squash`` existed keeps its density when loaded."""
    flow = jf.maf(3, num_layers=2, hidden=(8, 8), input_bound=0.5)
    assert flow.config["kwargs"]["input_squash"] == "soft_clip"
    saved = {**flow.config, "kwargs": {k: v for k, v in flow.config["kwargs"].items()
                                       if k != "input_squash"}}
    old = jf.from_config(saved)
    assert old.config["kwargs"]["input_squash"] == "tanh"
    params = jax.tree_util.tree_map(lambda p: p + 0.3, flow.init(jax.random.PRNGKey(0)))
    x = 2.0 * jax.random.normal(jax.random.PRNGKey(1), (16, 3))
    tanh_flow = jf.maf(3, num_layers=2, hidden=(8, 8), input_bound=0.5, input_squash="tanh")
    np.testing.assert_allclose(old.log_prob(params, x), tanh_flow.log_prob(params, x), rtol=1e-6)
    assert not np.allclose(old.log_prob(params, x), flow.log_prob(params, x))


def test_one_maf_layer_maps_absurd_latents_to_finite_samples():
    dim, min_scale = 6, 1e-2
    layer = maf_layer(dim, hidden=(32, 32), input_bound=5.0, min_scale=min_scale)
    params = layer.init(jax.random.PRNGKey(0))
    # a badly trained layer: large random output weights (huge mu, scales at the floor)
    params = jax.tree_util.tree_map(
        lambda p: p + 5.0 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params)
    z = jnp.array([1e25, -1e25, 3.0, 1e20, -2.0, 0.5])
    x, _ = jax.jit(layer.forward)(params, z)
    assert np.all(np.isfinite(np.asarray(x)))
    assert np.all(np.abs(np.asarray(x)) <= (np.abs(np.asarray(z)) + 1e8) / min_scale)
    # and the round trip still holds on ordinary values
    zs = jax.random.normal(jax.random.PRNGKey(2), (dim,))
    xs, _ = layer.forward(params, zs)
    back, _ = layer.inverse(params, xs)
    np.testing.assert_allclose(back, zs, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_trained_default_maf_samples_are_finite():
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float64)
    x = x + np.random.default_rng(0).uniform(size=x.shape)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    flow = jf.maf(64, num_layers=5, hidden=(128,))
    params = flow.init(jax.random.PRNGKey(0))
    params, _ = jf.fit(flow, params, x, key=jax.random.PRNGKey(1), batch_size=128, num_epochs=25,
                       progress=False)
    n = 10_000  # benchmarks/realdata.py counts 10^6 per model
    s = np.asarray(jax.jit(flow.sample, static_argnums=2)(params, jax.random.PRNGKey(2), (n,)))
    assert np.all(np.isfinite(s)), f"{np.sum(~np.isfinite(s).all(1))} non-finite samples of {n}"
    far = np.any(np.abs(s) > 100.0, axis=1).sum()  # standardised: 100 training sd
    assert far <= 1, f"{far} samples of {n} beyond 100 training standard deviations (0.01% allowed)"


@pytest.mark.parametrize("target,lo,hi", [(T.ring(), -8.0, 8.0), (T.banana(2), -9.0, 9.0),
                                          (T.funnel(2, scale=0.5), -6.0, 6.0)])
def test_two_dim_targets_integrate_to_one(target, lo, hi):
    g = np.linspace(lo, hi, 601)
    xx, yy = np.meshgrid(g, g)
    pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], 1), jnp.float32)
    mass = float(np.exp(np.asarray(target.log_prob(pts), np.float64)).sum() * (g[1] - g[0]) ** 2)
    assert abs(mass - 1.0) < 2e-3


def test_gaussian_mixture_matches_scipy_and_kl_of_truth_is_zero():
    t = T.gaussian_mixture(3, num_modes=2, seed=4)
    # a single-mode mixture is one Gaussian: compare with scipy (moments of many samples)
    one = T.gaussian_mixture(3, num_modes=1, seed=5)
    pts = np.asarray(one.sample(jax.random.PRNGKey(3), 200_000), np.float64)
    mvn = stats.multivariate_normal(pts.mean(0), np.cov(pts.T))
    probe = pts[:20]
    np.testing.assert_allclose(np.asarray(one.log_prob(jnp.asarray(probe, jnp.float32))),
                               mvn.logpdf(probe), atol=0.05)
    kl, se = T.kl_to_target(t, t.log_prob, jax.random.PRNGKey(4), n=2000)
    assert abs(kl) < 1e-5 and se < 1e-5
