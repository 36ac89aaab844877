"""MADE: degree layout, masks and the autoregressive property."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows import nn


@pytest.mark.parametrize("width,dim,ctx", [(10, 4, None), (11, 4, None), (7, 4, 2), (5, 6, None), (3, 1, None)])
def test_hidden_degrees_grouped_every_degree_present(width, dim, ctx):
    d = nn.hidden_degrees(width, dim, ctx)
    lo = 0 if (ctx is not None or dim == 1) else 1
    assert d.shape == (width,)
    assert np.all(np.diff(d) >= 0), "units must be grouped by degree in ascending order"
    assert set(d.tolist()) == set(range(lo, dim)), "every degree must be present"
    counts = np.bincount(d - lo)
    assert counts.max() - counts.min() <= 1


def test_width_smaller_than_degrees_is_rejected():
    with pytest.raises(ValueError, match="hidden width 2 is smaller than the 4 degrees"):
        nn.hidden_degrees(2, 5)


def test_bad_order_rejected():
    with pytest.raises(ValueError, match="order must be a permutation"):
        nn.check_order([0, 0, 1], 3)


@pytest.mark.parametrize("hidden", [(), (12,), (12, 12), (9, 13, 10)])
@pytest.mark.parametrize("order", [None, [2, 0, 3, 1]])
def test_made_is_autoregressive_in_order(hidden, order):
    dim = 4
    cfg = nn.made_config(dim, hidden, 2)
    order = nn.check_order(order, dim)
    params = nn.made_init(jax.random.PRNGKey(0), cfg)
    # make the (zero-initialised) output layer random so every connection is live
    params["out"]["w"] = jax.random.normal(jax.random.PRNGKey(1), params["out"]["w"].shape)
    x = jax.random.normal(jax.random.PRNGKey(2), (dim,))
    J = jax.jacfwd(lambda v: nn.made_apply(params, v, cfg, order))(x)  # (dim, P, dim)
    pos = np.empty(dim, int)
    pos[order] = np.arange(dim)
    for i in range(dim):
        for j in range(dim):
            if pos[j] >= pos[i]:
                assert np.all(J[i, :, j] == 0), f"output {i} depends on input {j} (not earlier in the order)"
    # and the structure is not trivially empty: the last variable sees the one before it
    last, before = order[-1], order[-2]
    assert np.any(J[last, :, before] != 0)


def test_made_starts_at_zero_output_and_context_reaches_first_variable():
    cfg = nn.made_config(3, (6,), 2, context_dim=2)
    params = nn.made_init(jax.random.PRNGKey(0), cfg)
    order = np.arange(3)
    x = jnp.ones(3)
    assert np.all(nn.made_apply(params, x, cfg, order, jnp.ones(2)) == 0)
    params["out"]["w"] = jnp.ones_like(params["out"]["w"])
    out1 = nn.made_apply(params, x, cfg, order, jnp.array([1.0, -1.0]))
    out2 = nn.made_apply(params, x, cfg, order, jnp.array([-3.0, 2.0]))
    # degree-0 hidden units carry the context to the FIRST variable too
    assert not np.allclose(out1[0], out2[0])


def test_traced_order_gives_same_masks_as_static():
    cfg = nn.made_config(5, (11, 7), 2)
    order = np.array([3, 1, 4, 0, 2])
    static = nn.masks(cfg, order)
    traced = jax.jit(lambda o: nn.masks(cfg, o))(jnp.asarray(order))
    for a, b in zip(static, traced):
        np.testing.assert_array_equal(a, b)


def test_residual_needs_equal_widths():
    with pytest.raises(ValueError, match="equal hidden widths"):
        nn.made_config(3, (8, 6), 2, residual=True)


def test_unknown_activation():
    with pytest.raises(ValueError, match="activation must be one of"):
        nn.get_activation("swishy")


def test_mlp_starts_at_zero_and_uses_context():
    p = nn.mlp_init(jax.random.PRNGKey(0), (3, 8, 4), context_dim=2)
    assert np.all(nn.mlp_apply(p, jnp.ones(3), jnp.ones(2)) == 0)
    p["layers"][-1]["w"] = jnp.ones((8, 4))
    a = nn.mlp_apply(p, jnp.ones(3), jnp.ones(2))
    b = nn.mlp_apply(p, jnp.ones(3), -jnp.ones(2))
    assert not np.allclose(a, b)
