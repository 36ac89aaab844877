"""Coupling layers (jaxflows/bijectors/coupling.py): masks, the affine formula,
traced masks under stack, context errors (the generic checks live in test_conformance)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.bijectors import chain, stack
from jaxflows.bijectors.coupling import affine_coupling, alternating_mask, check_mask, coupling, half_mask
from jaxflows.bijectors.spline import rational_quadratic_spline
from jaxflows.nn import mlp_apply
from jaxflows.testing import perturb_params

KEY = jax.random.PRNGKey(0)


def test_masks():
    np.testing.assert_array_equal(alternating_mask(5), [1, 0, 1, 0, 1])
    np.testing.assert_array_equal(alternating_mask(5, 1), [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(half_mask(5), [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(half_mask(5, 1), [0, 0, 0, 1, 1])
    with pytest.raises(ValueError, match=r"mask must have shape \(4,\)"):
        check_mask([1, 0, 1], 4)
    with pytest.raises(ValueError, match="booleans or 0/1"):
        check_mask([1, 0, 2, 0], 4)
    with pytest.raises(ValueError, match="mask must have shape"):
        affine_coupling(4, [True, False])


def test_affine_coupling_formula_and_identity_at_init():
    dim, mask = 4, np.array([True, False, True, False])
    b = affine_coupling(dim, mask, hidden=(8,), min_scale=1e-3)
    x = jnp.array([0.3, -1.2, 2.0, 0.7])
    p0 = b.init(KEY)
    y0, ld0 = b.forward(p0, x)
    np.testing.assert_allclose(y0, x, rtol=1e-6)
    np.testing.assert_array_equal(y0[mask], x[mask])
    assert abs(ld0) < 1e-6
    p = perturb_params(p0, jax.random.PRNGKey(1), 0.5)
    y, ld = b.forward(p, x)
    theta = mlp_apply(p, x * mask).reshape(dim, 2)
    offset = np.log(np.expm1(1.0 - 1e-3))
    sigma = jax.nn.softplus(theta[:, 1] + offset) + 1e-3
    want = np.where(mask, x, theta[:, 0] + sigma * x)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ld, np.sum(np.log(sigma)[~mask]), rtol=1e-5)
    # the transformed half really changes (the test above can fail)
    assert not np.allclose(y[~mask], x[~mask])


def test_coupling_with_traced_masks_matches_static_layers():
    """stack(..., per_layer=masks) (masks traced in lax.scan) == chain of static layers."""
    dim, spline = 5, rational_quadratic_spline(4)
    masks = np.stack([alternating_mask(dim, 0), half_mask(dim, 1)])
    stacked = stack(lambda m: coupling(dim, spline, m, hidden=(8,)), 2, per_layer=masks)
    params = perturb_params(stacked.init(KEY), jax.random.PRNGKey(2), 0.5)
    static = chain(*[coupling(dim, spline, m, hidden=(8,)) for m in masks])
    static_params = tuple(jax.tree_util.tree_map(lambda a: a[l], params) for l in range(2))
    x = jax.random.normal(jax.random.PRNGKey(3), (dim,))
    for direction in ("forward", "inverse"):
        got = getattr(stacked, direction)(params, x)
        want = getattr(static, direction)(static_params, x)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)


def test_coupling_context_errors():
    b = affine_coupling(3, alternating_mask(3), hidden=(8,), context_dim=2)
    p = b.init(KEY)
    with pytest.raises(ValueError, match="context_dim=2"):
        b.forward(p, jnp.zeros(3))
    with pytest.raises(ValueError, match=r"context must have shape \(2,\)"):
        b.inverse(p, jnp.zeros(3), jnp.zeros(3))
    with pytest.raises(ValueError, match="context_dim must be None or a positive integer"):
        affine_coupling(3, alternating_mask(3), context_dim=0)
