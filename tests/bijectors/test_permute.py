"""Fixed permutations (jaxflows/bijectors/permute.py): the maps, their inverses and
their configuration errors (the generic checks live in test_conformance)."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows.bijectors import permute, random_permutation, reverse


def test_permute_maps_and_zero_log_det():
    b = permute([2, 0, 3, 1])
    z = jnp.array([10.0, 11.0, 12.0, 13.0])
    x, ld = b.forward({}, z)
    np.testing.assert_array_equal(x, [12.0, 10.0, 13.0, 11.0])  # x = z[permutation]
    assert ld == 0.0 and ld.dtype == z.dtype
    z_back, ld_inv = b.inverse({}, x)
    np.testing.assert_array_equal(z_back, z)
    assert ld_inv == 0.0
    assert b.init(None) == {}


def test_reverse_and_random_permutation():
    z = jnp.arange(5.0)
    np.testing.assert_array_equal(reverse(5).forward({}, z)[0], z[::-1])
    want = np.random.default_rng(3).permutation(5)
    np.testing.assert_array_equal(random_permutation(5, seed=3).forward({}, z)[0], z[want])
    # the seed is the configuration: same seed, same map; another seed, another map
    np.testing.assert_array_equal(random_permutation(5, 3).forward({}, z)[0],
                                  random_permutation(5, 3).forward({}, z)[0])
    assert not np.array_equal(random_permutation(5, 3).forward({}, z)[0],
                              random_permutation(5, 4).forward({}, z)[0])


@pytest.mark.parametrize("bad", [[0, 0, 1], [1, 2, 3], [[0, 1], [1, 0]], []])
def test_permute_rejects_non_permutations(bad):
    with pytest.raises(ValueError, match="permutation must be a permutation of range"):
        permute(bad)


def test_reverse_rejects_a_bad_dim():
    with pytest.raises(ValueError, match="dim must be a positive integer, got 0"):
        reverse(0)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        random_permutation(2.5, seed=0)
