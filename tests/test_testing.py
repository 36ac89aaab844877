"""The conformance suite itself (jaxflows/testing.py): it must fail on bijectors that
are wrong in one specific way (every bijector of the package passes it in test_conformance)."""

import jax.numpy as jnp
import pytest

from jaxflows import Bijector, bijectors as B
from jaxflows.testing import check_bijector


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


def test_only_check_jacobians_false_skips_the_log_det_check():
    """A log-det that is wrong in both directions (and still cancels) fails the Jacobian
    check only: check_jacobians=False passes it, every other setting fails it."""
    good = B.elementwise_affine(3)
    fwd = lambda p, x, c=None: (good.forward(p, x, c)[0], 2 * good.forward(p, x, c)[1])  # noqa: E731
    inv = lambda p, y, c=None: (good.inverse(p, y, c)[0], 2 * good.inverse(p, y, c)[1])  # noqa: E731
    doubled = Bijector(good.init, fwd, inv)
    check_bijector(doubled, 3, check_jacobians=False)
    for skipped in ("check_eager", "check_transforms"):
        with pytest.raises(AssertionError, match="slogdet"):
            check_bijector(doubled, 3, **{skipped: False})
