"""The fixed affine bijector (jaxflows/bijectors/standardize.py): the map in both
directions, its dtype handling and the checks of its constants (the generic checks
live in test_conformance; ``jaxflows.standardize`` is tested in test_standardizing)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.bijectors import fixed_affine
from jaxflows.bijectors.standardize import check_affine_constants


def test_fixed_affine_maps_and_log_dets():
    shift, scale = np.array([1.0, -2.0, 30.0]), np.array([0.5, 2.0, 10.0])
    b = fixed_affine(shift, scale)
    assert b.init(jax.random.PRNGKey(0)) == {}
    z = jnp.array([0.2, -1.0, 3.0])
    x, ld = b.forward({}, z)
    np.testing.assert_allclose(x, shift + scale * np.asarray(z), rtol=1e-6)
    np.testing.assert_allclose(ld, np.sum(np.log(scale)), rtol=1e-6)
    z_back, ld_inv = b.inverse({}, x)
    np.testing.assert_allclose(z_back, z, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ld_inv, -ld, rtol=1e-6)
    assert x.dtype == ld.dtype == jnp.float32  # constants are cast to the input's dtype
    with jax.enable_x64(True):
        x64, ld64 = b.forward({}, jnp.asarray(z, jnp.float64))
        assert x64.dtype == ld64.dtype == jnp.float64


@pytest.mark.parametrize("shift,scale,match", [
    ([0.0, 1.0], [1.0], "1-D arrays of one length"),
    ([[0.0]], [[1.0]], "1-D arrays of one length"),
    ([], [], "1-D arrays of one length"),
    ([0.0, np.nan], [1.0, 1.0], "finite"),
    ([0.0, 0.0], [1.0, np.inf], "finite"),
    ([0.0, 0.0], [1.0, 0.0], "scale must be positive in every column, got 0.0 in column 1"),
])
def test_constants_are_checked(shift, scale, match):
    with pytest.raises(ValueError, match=match):
        fixed_affine(shift, scale)


def test_check_affine_constants_with_a_dim():
    shift, scale = check_affine_constants([1, 2], [3, 4], dim=2)
    assert shift.dtype == scale.dtype == np.float64
    with pytest.raises(ValueError, match=r"shape \(3,\) for this flow, got \(2,\)"):
        check_affine_constants([1.0, 2.0], [3.0, 4.0], dim=3)
