"""chain / invert / stack semantics (jaxflows/bijectors/combinators.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxflows import Bijector, bijectors as B
from jaxflows.testing import perturb_params


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


def test_invert_swaps_the_input_checks_with_the_maps():
    """A checked bijector's labels follow invert: the inverted forward reads z."""
    a = B.act_norm(3)
    inv = B.invert(a)
    with pytest.raises(ValueError, match=r"^invert\(act_norm\)\.forward: z must be one event of shape \(3,\), got shape \(2,\)"):
        inv.forward(a.init(None), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"^invert\(act_norm\)\.inverse: x must be one event"):
        inv.inverse(a.init(None), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"^act_norm\.forward: z must"):
        B.invert(inv).forward(a.init(None), jnp.zeros(2))
    # maf_layer is the inverted kernel, named for what the user built
    maf = B.maf_layer(3, hidden=(4,))
    p = maf.init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"^maf_layer\.inverse: x must be one event of shape \(3,\)"):
        maf.inverse(p, jnp.zeros(5))
    with pytest.raises(TypeError, match=r"^maf_layer\.forward: z must be a floating-point array .*int32"):
        maf.forward(p, jnp.zeros(3, jnp.int32))


def test_invert_of_a_hand_written_bijector_swaps_its_functions():
    """Bijectors not built by jaxflows (no checks to relabel) are swapped as they are."""
    fwd = lambda p, z, c=None: (2.0 * z, jnp.log(2.0) * z.shape[0])  # noqa: E731
    inv = lambda p, x, c=None: (x / 2.0, -jnp.log(2.0) * x.shape[0])  # noqa: E731
    b = B.invert(Bijector(lambda k: {}, fwd, inv))
    assert b.forward is inv and b.inverse is fwd
