"""Coupling, LU-linear and ActNorm layers: formulas, structure and errors
(the generic checks live in test_conformance)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.bijectors import chain, stack
from jaxflows.bijectors.coupling import affine_coupling, alternating_mask, check_mask, coupling, half_mask
from jaxflows.bijectors.linear import act_norm, actnorm_init_from_data, lu_linear
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


def test_lu_linear_is_w_x_plus_b():
    dim = 4
    b = lu_linear(dim, permutation_seed=1)
    x = jnp.array([0.5, -1.0, 2.0, 0.1])
    p0 = b.init(KEY)
    np.testing.assert_allclose(b.forward(p0, x)[0], x[np.random.default_rng(1).permutation(dim)])
    p = perturb_params(p0, jax.random.PRNGKey(4), 0.5)
    L = np.tril(np.asarray(p["lower"]), -1) + np.eye(dim)
    U = np.triu(np.asarray(p["upper"]), 1) + np.diag(np.exp(np.asarray(p["log_diag"])))
    P = np.eye(dim)[np.random.default_rng(1).permutation(dim)]
    W = P @ L @ U
    y, ld = b.forward(p, x)
    np.testing.assert_allclose(y, W @ np.asarray(x) + np.asarray(p["bias"]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ld, np.linalg.slogdet(W)[1], rtol=1e-5, atol=1e-5)
    x_back, ld_inv = b.inverse(p, y)
    np.testing.assert_allclose(x_back, x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ld_inv, -ld, rtol=1e-6)


def test_actnorm_data_dependent_init():
    dim = 3
    b = act_norm(dim)
    data = jnp.array([[1.0, 10.0, -5.0], [3.0, 14.0, -5.5], [2.0, 12.0, -4.0], [6.0, 8.0, -6.0]])
    p0 = b.init(KEY)
    np.testing.assert_array_equal(b.inverse(p0, data[0])[0], data[0])  # identity before
    p = actnorm_init_from_data(p0, data)
    assert set(p) == {"shift", "log_scale"}
    z = jax.vmap(lambda x: b.inverse(p, x)[0])(data)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1.0, rtol=1e-4)
    np.testing.assert_allclose(b.inverse(p, data[0])[1], -np.sum(np.log(data.std(0))), rtol=1e-4)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 3\)"):
        actnorm_init_from_data(p0, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        actnorm_init_from_data(p0, jnp.ones((1, 3)))
    with pytest.raises(TypeError, match="floating-point"):
        actnorm_init_from_data(p0, np.ones((4, 3), np.int32))


def test_logit_bijector_matches_the_report_preprocessing_and_counts_its_log_det():
    """logit(dim, scale=256) is the MNIST preprocessing: y = logit(a + (1-2a) x/256) with
    log|dy/dx| = sum log(1-2a) - log 256 - log s - log(1-s); a flow chained with it
    scores pixels in their own units."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import jaxflows as jf
    from jaxflows.bijectors import chain, logit

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
