"""Batch norm: eval/train modes, the params/state split and a training loop
that threads the running statistics (the optimiser never touches them)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxflows.flows as flows
from jaxflows.bijectors.batchnorm import (
    batch_norm,
    batch_norm_train,
    has_state,
    merge_state,
    split_state,
    stack_with_batch_norm,
)
from jaxflows.bijectors.coupling import affine_coupling, alternating_mask
from jaxflows.testing import perturb_params

KEY = jax.random.PRNGKey(0)


def make_bn_step(flow, optimizer):
    """The training step ``fit`` should use for flows with ``train_log_prob``:
    ``(trainable, state, opt_state, x, context) -> (trainable, state, opt_state, loss)``."""

    def loss_fn(trainable, state, x, context):
        lp, new_params = flow.train_log_prob(merge_state(trainable, state), x, context)
        return -jnp.mean(lp), split_state(new_params)[1]

    @jax.jit
    def step(trainable, state, opt_state, x, context=None):
        (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, state, x, context)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), new_state, opt_state, loss

    return step


def test_eval_mode_formula_and_identity_at_init():
    b = batch_norm(3)
    p = b.init(KEY)
    x = jnp.array([0.5, -2.0, 3.0])
    z, ld = b.inverse(p, x)
    np.testing.assert_array_equal(z, x)
    assert ld == 0.0
    p = {"log_scale": jnp.array([0.1, 0.0, -0.2]), "shift": jnp.array([1.0, 0.0, 0.5]),
         "running_mean": jnp.array([0.5, 1.0, -1.0]), "running_var": jnp.array([4.0, 0.25, 1.0])}
    z, ld = b.inverse(p, x)
    want = (x - p["running_mean"]) / jnp.sqrt(p["running_var"]) * jnp.exp(p["log_scale"]) + p["shift"]
    np.testing.assert_allclose(z, want, rtol=1e-6)
    np.testing.assert_allclose(ld, np.sum(p["log_scale"] - 0.5 * np.log(p["running_var"])), rtol=1e-6)
    # running statistics get exactly zero gradient in eval mode
    g = jax.grad(lambda q: jnp.sum(b.inverse(q, x)[0] ** 2) + b.inverse(q, x)[1])(p)
    assert np.all(g["running_mean"] == 0) and np.all(g["running_var"] == 0)
    assert np.any(g["log_scale"] != 0) and np.any(g["shift"] != 0)


def test_train_mode_uses_batch_statistics_and_updates_running_ones():
    p = batch_norm(2).init(KEY)
    x = jnp.array([[1.0, 10.0], [3.0, 20.0], [5.0, 30.0]])
    z, ld, new = batch_norm_train(p, x, momentum=0.8)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(z.var(0), 1.0, rtol=1e-4)
    np.testing.assert_allclose(ld, np.full(3, -0.5 * np.sum(np.log(x.var(0)))), rtol=1e-5)
    np.testing.assert_allclose(new["running_mean"], 0.2 * x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(new["running_var"], 0.8 + 0.2 * x.var(0), rtol=1e-6)
    np.testing.assert_array_equal(new["log_scale"], p["log_scale"])
    with pytest.raises(ValueError, match=r"batch of shape \(B >= 2, 2\)"):
        batch_norm_train(p, x[:1])
    with pytest.raises(ValueError, match="momentum"):
        batch_norm_train(p, x, momentum=1.0)


def test_split_merge_roundtrip():
    flow = flows.realnvp(3, num_layers=2, hidden=(8,), batch_norm=True, base="diag_normal")
    params = flow.init(KEY)
    assert has_state(params) and not has_state(flows.realnvp(3, hidden=(8,)).init(KEY))
    trainable, state = split_state(params)
    assert not has_state(trainable)
    names = {str(p[-1]) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]}
    assert names == {"['running_mean']", "['running_var']"}
    merged = merge_state(trainable, state)
    assert jax.tree_util.tree_structure(merged) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree_util.tree_leaves(merged), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(a, b)
    optax.adam(1e-3).init(trainable)  # optax accepts the None holes


def test_train_log_prob_equals_eval_when_running_stats_are_this_batch():
    """momentum=0: the running stats become this batch's stats, so the eval-mode
    density of the same batch must reproduce the training-mode one."""
    dim = 3
    make = lambda m: affine_coupling(dim, m, hidden=(8,))  # noqa: E731
    masks = np.stack([alternating_mask(dim, l % 2) for l in range(3)])
    bij, train_inverse = stack_with_batch_norm(make, 3, dim, per_layer=masks, momentum=0.0)
    params = perturb_params(bij.init(KEY), jax.random.PRNGKey(1), 0.3)
    x = 2.0 + 3.0 * jax.random.normal(jax.random.PRNGKey(2), (16, dim))
    z, ld, new = train_inverse(params, x, None)
    np.testing.assert_allclose(z.mean(0), params[0]["shift"][0], atol=1e-4)  # last BN normalises
    z_eval, ld_eval = jax.vmap(lambda xi: bij.inverse(new, xi))(x)
    np.testing.assert_allclose(z_eval, z, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ld_eval, ld, rtol=1e-4, atol=1e-4)
    # with the *old* stats the eval density differs (the check above can fail)
    assert not np.allclose(jax.vmap(lambda xi: bij.inverse(params, xi))(x)[0], z, atol=1e-2)


@pytest.mark.parametrize("factory", ["maf", "realnvp"])
def test_training_loop_threads_state_and_optimizer_never_touches_it(factory):
    rng = np.random.default_rng(0)
    data = np.stack([rng.normal(3.0, 2.0, 512), rng.normal(-1.0, 0.5, 512)], 1).astype(np.float32)
    data[:, 1] += 0.5 * data[:, 0]
    flow = flows.FACTORIES[factory](2, num_layers=2, hidden=(16,), batch_norm=True)
    params = flow.init(KEY)
    trainable, state = split_state(params)
    optimizer = optax.adamw(3e-3, weight_decay=0.1)  # weight decay would move any param it sees
    opt_state = optimizer.init(trainable)
    step = make_bn_step(flow, optimizer)
    # the training pass's new state, compiled once (eagerly it would re-trace every step)
    ema = jax.jit(lambda t, s, x: split_state(flow.train_log_prob(merge_state(t, s), x)[1])[1])
    losses = []
    for epoch in range(8):
        for i in range(0, 512, 64):
            x = data[i:i + 64]
            # the new state is exactly the training pass's EMA: the optimiser did not touch it
            want = ema(trainable, state, x)
            trainable, state, opt_state, loss = step(trainable, state, opt_state, x)
            for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(want)):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
            losses.append(float(loss))
    assert step._cache_size() == 1
    assert np.mean(losses[-8:]) < np.mean(losses[:8]) - 0.5, (losses[:8], losses[-8:])
    # state = EMA of batch statistics: the first (data-side) BN layer of the density pass sees
    # the output of the last layer's inverse; its running mean is finite and has moved from 0
    params = merge_state(trainable, state)
    bn = params["bijector"][0]
    assert np.all(np.isfinite(bn["running_var"])) and np.any(np.abs(bn["running_mean"]) > 1e-2)
    # eval mode with the threaded state is a good density of the data
    eval_nll = -float(jnp.mean(flow.log_prob(params, data)))
    assert abs(eval_nll - np.mean(losses[-8:])) < 0.3, (eval_nll, np.mean(losses[-8:]))
    # with the initial (untouched) statistics it would be much worse
    stale = merge_state(trainable, split_state(flow.init(KEY))[1])
    assert -float(jnp.mean(flow.log_prob(stale, data))) > eval_nll + 0.5


def test_train_log_prob_errors_and_absent_without_batch_norm():
    assert flows.maf(2, hidden=(8,)).train_log_prob is None
    flow = flows.nsf(2, num_layers=2, hidden=(8,), batch_norm=True, context_dim=1)
    p = flow.init(KEY)
    with pytest.raises(ValueError, match=r"batch x of shape \(B, 2\)"):
        flow.train_log_prob(p, jnp.zeros((2, 3, 2)), jnp.zeros((1,)))
    with pytest.raises(ValueError, match="context_dim=1"):
        flow.train_log_prob(p, jnp.zeros((4, 2)))
    lp, new = flow.train_log_prob(p, jax.random.normal(KEY, (4, 2)), jnp.ones((1,)))
    assert lp.shape == (4,) and np.all(np.isfinite(lp))


def test_stack_with_batch_norm_checks_its_layers_like_stack():
    """stack_with_batch_norm validates (layer, n, per_layer) with stack's own code, naming itself."""
    layer = affine_coupling(2, alternating_mask(2), hidden=(4,))
    with pytest.raises(TypeError, match=r"stack_with_batch_norm\(layer, n\): layer must be a Bijector"):
        stack_with_batch_norm(lambda m: layer, 2, 2)
    with pytest.raises(ValueError, match="stack_with_batch_norm needs n >= 1 layers, got 0"):
        stack_with_batch_norm(layer, 0, 2)
    with pytest.raises(ValueError, match=r"per_layer must have leading axis n=3, got shape \(2, 2\)"):
        stack_with_batch_norm(lambda m: layer, 3, 2, per_layer=np.zeros((2, 2)))
    bij, _ = stack_with_batch_norm(layer, 2, 2)
    with pytest.raises(ValueError, match=r"batch_norm\.forward: z must be one event of shape \(2,\)"):
        bij.forward(bij.init(KEY), jnp.zeros(3))
