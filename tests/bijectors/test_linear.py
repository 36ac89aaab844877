"""LU-linear and ActNorm layers (jaxflows/bijectors/linear.py): formulas and the
data-dependent ActNorm initialisation (the generic checks live in test_conformance)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.bijectors.linear import act_norm, actnorm_init_from_data, lu_linear
from jaxflows.testing import perturb_params

KEY = jax.random.PRNGKey(0)


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
