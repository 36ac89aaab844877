"""Variational inference (jaxflows/vi.py): ELBO fits of an IAF to known targets."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxflows
from jaxflows import vi

MEAN = np.array([1.0, -0.5, 0.5], np.float32)
COV = np.array([[1.0, 0.6, 0.2], [0.6, 1.5, -0.4], [0.2, -0.4, 0.5]], np.float32)
PREC = np.linalg.inv(COV).astype(np.float32)
GAUSS_LOG_Z = 0.5 * np.linalg.slogdet(COV)[1] + 1.5 * math.log(2 * math.pi)


def gaussian_log_density(x):
    """Unnormalised N(MEAN, COV): ``-(x - m)^T P (x - m) / 2``; ``log Z = GAUSS_LOG_Z``."""
    d = x - MEAN
    return -0.5 * d @ PREC @ d


def banana_log_density(x):
    """``x0 ~ N(0, 2^2)``, ``x1 | x0 ~ N(x0^2 / 2 - 2, 1)``, unnormalised; ``Z = 2 pi * 2``."""
    return -x[0] ** 2 / 8.0 - 0.5 * (x[1] - 0.5 * x[0] ** 2 + 2.0) ** 2


BANANA_LOG_Z = math.log(4 * math.pi)


@pytest.mark.parametrize("estimator", ["reparam", "stl"])
def test_recovers_correlated_gaussian(estimator):
    flow = jaxflows.iaf(3, num_layers=2, hidden=(16, 16))
    params, hist = vi.fit_vi(flow, flow.init(jax.random.PRNGKey(0)), gaussian_log_density,
                             key=jax.random.PRNGKey(1), num_steps=1000, num_samples=64,
                             optimizer=optax.adam(5e-3), estimator=estimator)
    elbo = np.asarray(hist["elbo"])
    assert elbo.shape == (1000,) and np.all(np.isfinite(elbo))
    final = elbo[-100:].mean()
    assert final > elbo[:20].mean() + 0.5  # it learned something
    assert final <= GAUSS_LOG_Z + 0.02  # ELBO <= log Z (up to Monte-Carlo noise)
    assert final > GAUSS_LOG_Z - 0.05  # KL(q || p) < 0.05 nats
    x, stats = jax.jit(lambda p: (  # one compile
        flow.sample(p, jax.random.PRNGKey(2), (20000,)),
        vi.importance_ess(flow, p, gaussian_log_density, jax.random.PRNGKey(3), 4096)))(params)
    mean_err = np.abs(np.asarray(x.mean(0)) - MEAN).max()
    cov_err = np.abs(np.cov(np.asarray(x).T) - COV).max()
    assert mean_err < 0.1, mean_err
    assert cov_err < 0.15, cov_err
    assert stats["ess_fraction"] > 0.9
    assert abs(float(stats["log_evidence"]) - GAUSS_LOG_Z) < 0.03


def test_banana_elbo_and_ess():
    flow = jaxflows.iaf(2, num_layers=4, hidden=(32, 32))
    params0 = flow.init(jax.random.PRNGKey(0))
    before = vi.importance_ess(flow, params0, banana_log_density, jax.random.PRNGKey(3), 4096)
    params, hist = vi.fit_vi(flow, params0, banana_log_density, key=jax.random.PRNGKey(1),
                             num_steps=1500, num_samples=64, optimizer=optax.adam(3e-3),
                             estimator="stl")
    after = vi.importance_ess(flow, params, banana_log_density, jax.random.PRNGKey(3), 4096)
    final_elbo = float(np.mean(hist["elbo"][-100:]))
    print(f"banana: ELBO {final_elbo:.3f} (log Z {BANANA_LOG_Z:.3f}); ESS fraction "
          f"{float(before['ess_fraction']):.3f} -> {float(after['ess_fraction']):.3f}; "
          f"log Z estimate {float(after['log_evidence']):.3f}")
    assert float(before["ess_fraction"]) < 0.3  # the untrained flow (N(0, I)) is a poor proposal
    assert float(after["ess_fraction"]) > 0.7
    assert 1.0 <= float(after["ess"]) <= 4096.0
    assert BANANA_LOG_Z - 0.15 < final_elbo <= BANANA_LOG_Z + 0.02
    assert abs(float(after["log_evidence"]) - BANANA_LOG_Z) < 0.05


def test_estimators_share_value_and_differ_in_gradient():
    """STL keeps the ELBO's value, drops the score term (so its gradient differs per sample),
    and at q == p its gradient is exactly zero while the reparameterised one is not."""
    flow = jaxflows.iaf(2, num_layers=1, hidden=(8,))
    params = flow.init(jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map(lambda a: a + 0.2 * jax.random.normal(jax.random.PRNGKey(1), a.shape), params)
    target = lambda x: flow.log_prob(params, x)  # noqa: E731  q == p exactly
    key = jax.random.PRNGKey(2)
    both = jax.jit(lambda p: {est: jax.value_and_grad(  # one compile for both estimators
        lambda q: vi.elbo(flow, q, target, key, 32, estimator=est))(p) for est in ("reparam", "stl")})
    out = both(params)
    for value, _ in out.values():
        np.testing.assert_allclose(value, 0.0, atol=1e-4)
    grads = {est: g for est, (_, g) in out.items()}
    flat = {k: np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(g)]) for k, g in grads.items()}
    assert np.abs(flat["stl"]).max() < 1e-4
    assert np.abs(flat["reparam"]).max() > 1e-3


def test_importance_ess_bounds():
    flow = jaxflows.iaf(2, num_layers=1, hidden=(8,))
    params = flow.init(jax.random.PRNGKey(0))
    exact = vi.importance_ess(flow, params, lambda x: -0.5 * x @ x, jax.random.PRNGKey(1), 500)
    np.testing.assert_allclose(exact["ess"], 500.0, rtol=1e-4)  # equal weights
    np.testing.assert_allclose(exact["log_evidence"], math.log(2 * math.pi), atol=1e-4)
    far = vi.importance_ess(flow, params, lambda x: -0.5 * jnp.sum((x - 6.0) ** 2), jax.random.PRNGKey(1), 500)
    assert 1.0 <= float(far["ess"]) < 5.0
    assert float(far["ess_fraction"]) < 0.01


def test_conditional_flow_amortised_vi():
    """``log_density(x, c)``: the target's mean is the context; one flow fits both rows."""
    flow = jaxflows.iaf(2, num_layers=2, hidden=(16,), context_dim=1)
    context = jnp.array([[-2.0], [2.0]])
    log_density = lambda x, c: -0.5 * jnp.sum((x - c) ** 2)  # noqa: E731
    params, hist = vi.fit_vi(flow, flow.init(jax.random.PRNGKey(0)), log_density,
                             key=jax.random.PRNGKey(1), num_steps=1500, num_samples=32,
                             optimizer=optax.adam(3e-3), context=context,
                             estimator="stl")
    x = jax.jit(flow.sample, static_argnums=2)(params, jax.random.PRNGKey(2), (4000,), context)
    assert x.shape == (4000, 2, 2)
    np.testing.assert_allclose(x.mean(0), [[-2.0, -2.0], [2.0, 2.0]], atol=0.1)
    np.testing.assert_allclose(x.std(0), np.ones((2, 2)), atol=0.1)
    assert np.mean(hist["elbo"][-50:]) > math.log(2 * math.pi) - 0.02


def test_history_is_independent_of_sync_chunks():
    flow = jaxflows.iaf(2, num_layers=1, hidden=(8,))
    params = flow.init(jax.random.PRNGKey(0))
    kw = dict(key=jax.random.PRNGKey(1), num_steps=23, num_samples=8, optimizer=optax.adam(1e-2))
    p1, h1 = vi.fit_vi(flow, params, gaussian_log_density_2d, steps_per_sync=5, **kw)
    p2, h2 = vi.fit_vi(flow, params, gaussian_log_density_2d, steps_per_sync=100, **kw)
    assert len(h1["elbo"]) == len(h2["elbo"]) == 23
    np.testing.assert_allclose(h1["elbo"], h2["elbo"], rtol=1e-5, atol=1e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p1, p2)


def gaussian_log_density_2d(x):
    return -0.5 * jnp.sum((x - 1.0) ** 2)


def test_errors():
    flow = jaxflows.iaf(2, num_layers=1, hidden=(8,))
    params = flow.init(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    with pytest.raises(ValueError, match="estimator"):
        vi.fit_vi(flow, params, gaussian_log_density_2d, key=key, num_steps=1, estimator="score")
    with pytest.raises(ValueError, match="num_samples"):
        vi.fit_vi(flow, params, gaussian_log_density_2d, key=key, num_steps=1, num_samples=0)
    with pytest.raises(TypeError, match="log_density"):
        vi.fit_vi(flow, params, None, key=key, num_steps=1)
    with pytest.raises(ValueError, match="scalar for one event"):
        vi.elbo(flow, params, lambda x: x, key, 4)
    with pytest.raises(ValueError, match="context"):
        vi.fit_vi(flow, params, gaussian_log_density_2d, key=key, num_steps=1, context=jnp.zeros((1, 1)))
    with pytest.raises(ValueError, match="max_bad_steps must be an integer >= 1, got 0"):
        vi.fit_vi(flow, params, gaussian_log_density_2d, key=key, num_steps=1, max_bad_steps=0)
    # a target that is -inf where the flow puts mass: every step is skipped, and the second
    # in a row raises the one divergence error fit raises too, naming the step
    with pytest.raises(jaxflows.TrainingDiverged, match=r"stopped at step 1: .*non-finite at 2 "
                                                        r"steps in a row \(steps 0 to 1\)") as e:
        vi.fit_vi(flow, params, lambda x: jnp.where(x[0] > 0, 0.0, -jnp.inf), key=key,
                  num_steps=3, max_bad_steps=2)
    err = e.value
    assert isinstance(err, FloatingPointError)
    assert (err.epoch, err.step, err.bad_steps) == (None, 1, 3)  # the chunk ran all 3 steps
    assert err.history["skipped_steps"] == 3 and not np.isfinite(err.history["elbo"]).any()
    jax.tree_util.tree_map(np.testing.assert_array_equal, err.params, params)  # never moved


def test_fit_vi_skips_sporadic_non_finite_steps_like_fit():
    """The step is jitted and guarded as fit's: a step whose ELBO is not finite leaves the
    params as they were and is counted; training goes on through fewer than max_bad_steps."""
    flow = jaxflows.iaf(2, num_layers=1, hidden=(8,))
    params = flow.init(jax.random.PRNGKey(0))
    opt = optax.adam(1e-2)
    cliff = lambda x: jnp.where(x[0] > 1.5, -jnp.inf, -0.5 * x @ x)  # noqa: E731  hit now and then
    step = vi.make_vi_step(flow, cliff, opt, num_samples=8)
    assert hasattr(step, "lower")  # jitted, like make_step's
    p, hist = vi.fit_vi(flow, params, cliff, key=jax.random.PRNGKey(1), num_steps=30,
                        num_samples=8, optimizer=opt)
    bad = int(np.sum(~np.isfinite(hist["elbo"])))
    assert 0 < bad == hist["skipped_steps"] < 30
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree_util.tree_leaves(p))
    state = opt.init(params)
    for i in range(20):  # find a skipped step: it returns its inputs bit for bit
        p1, s1, value = step(params, state, jax.random.PRNGKey(100 + i))
        if not np.isfinite(float(value)):
            jax.tree_util.tree_map(np.testing.assert_array_equal, p1, params)
            jax.tree_util.tree_map(np.testing.assert_array_equal, s1, state)
            break
    else:
        pytest.fail("no step hit the cliff")
