"""chain / invert / stack semantics, and the conformance suite's own ability to fail."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows import Bijector, bijectors as B
from jaxflows.testing import check_bijector, perturb_params


def _affine(dim, key):
    b = B.elementwise_affine(dim)
    return b, perturb_params(b.init(key), key, 0.5)


def test_chain_first_listed_acts_first_in_forward():
    dim = 3
    a, pa = _affine(dim, jax.random.PRNGKey(0))
    r = B.permute([1, 2, 0])
    x = jnp.arange(3.0)
    y, ld = B.chain(a, r).forward((pa, {}), x)
    y_manual = r.forward({}, a.forward(pa, x)[0])[0]
    np.testing.assert_allclose(y, y_manual)
    y_other = a.forward(pa, r.forward({}, x)[0])[0]
    assert not np.allclose(y, y_other)
    np.testing.assert_allclose(ld, a.forward(pa, x)[1])


def test_invert_swaps_directions():
    a, pa = _affine(2, jax.random.PRNGKey(1))
    x = jnp.array([0.3, -1.2])
    inv = B.invert(a)
    np.testing.assert_allclose(inv.forward(pa, x)[0], a.inverse(pa, x)[0])
    np.testing.assert_allclose(inv.inverse(pa, x)[1], a.forward(pa, x)[1])


def test_stack_equals_unrolled_chain():
    dim, n = 3, 4
    layer = B.chain(B.maf_layer(dim, hidden=(5,)), B.reverse(dim))
    st = B.stack(layer, n)
    params = perturb_params(st.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.4)
    assert jax.tree_util.tree_leaves(params)[0].shape[0] == n
    per_layer = [jax.tree_util.tree_map(lambda a: a[l], params) for l in range(n)]
    unrolled = B.chain(*([layer] * n))
    x = jax.random.normal(jax.random.PRNGKey(2), (dim,))
    for direction in ("forward", "inverse"):
        y1, l1 = getattr(st, direction)(params, x)
        y2, l2 = getattr(unrolled, direction)(tuple(per_layer), x)
        np.testing.assert_allclose(y1, y2, atol=1e-5)
        np.testing.assert_allclose(l1, l2, atol=1e-5)


def test_stack_per_layer_data_is_scanned_not_a_param():
    orders = np.array([[0, 1, 2], [2, 1, 0], [1, 0, 2]])
    st = B.stack(lambda o: B.maf_layer(3, hidden=(4,), order=o), 3, per_layer=orders)
    params = st.init(jax.random.PRNGKey(0))
    for leaf in jax.tree_util.tree_leaves(params):
        assert jnp.issubdtype(leaf.dtype, jnp.floating), "no integer leaves in params"
    assert jax.tree_util.tree_leaves(params)[0].shape[0] == 3
    # (the full conformance suite runs on this construction as registry entry stack_per_layer_orders)
    x = jnp.array([0.3, -1.0, 2.0])
    y, ld = st.forward(params, x)
    x_back, ld_back = st.inverse(params, y)
    np.testing.assert_allclose(x_back, x, atol=1e-5)
    np.testing.assert_allclose(ld + ld_back, 0.0, atol=1e-5)


def test_stack_and_chain_argument_errors():
    with pytest.raises(ValueError, match="n >= 1"):
        B.stack(B.reverse(2), 0)
    with pytest.raises(TypeError, match="chain argument 1 must be a Bijector"):
        B.chain(B.reverse(2), lambda x: x)
    with pytest.raises(ValueError, match="leading axis n=2"):
        B.stack(lambda o: B.reverse(2), 2, per_layer=np.zeros((3, 2)))


def _broken(kind):
    """Bijectors that are wrong in one specific way; the suite must catch each."""
    dim = 3
    good = B.elementwise_affine(dim)

    if kind == "wrong_log_det":
        fwd = lambda p, x, c=None: (good.forward(p, x, c)[0], 2 * good.forward(p, x, c)[1])  # noqa: E731
        return Bijector(good.init, fwd, good.inverse)
    if kind == "not_inverse":
        inv = lambda p, y, c=None: (good.inverse(p, y, c)[0] + 1e-2, good.inverse(p, y, c)[1])  # noqa: E731
        return Bijector(good.init, good.forward, inv)
    if kind == "no_shape_check":
        fwd = lambda p, x, c=None: (x * 2.0, jnp.log(2.0) * x.shape[-1])  # noqa: E731
        inv = lambda p, y, c=None: (y / 2.0, -jnp.log(2.0) * y.shape[-1])  # noqa: E731
        return Bijector(lambda k: {}, fwd, inv)
    raise KeyError(kind)


@pytest.mark.parametrize("kind,match", [
    ("wrong_log_det", "log_det"),
    ("not_inverse", "inverse"),
    ("no_shape_check", "expected ValueError"),
])
def test_conformance_suite_catches_broken_bijectors(kind, match):
    with pytest.raises(AssertionError, match=match):
        check_bijector(_broken(kind), 3, check_inputs=True)


def test_conformance_suite_catches_wrong_autoregressive_order():
    layer = B.maf_layer(3, hidden=(16,), order=[2, 0, 1])
    check_bijector(layer, 3, order=[2, 0, 1])
    with pytest.raises(AssertionError, match="not triangular"):
        check_bijector(layer, 3, order=[0, 1, 2])
