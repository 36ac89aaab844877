"""One validation path for every bijector (``jaxflows._checks.checked_bijector``).

Bad input raises at trace time, before any computation, with a message that
names the method (``<bijector>.forward`` / ``.inverse``), the argument in the
convention of the docs (``forward`` reads ``z``, ``inverse`` reads ``x``, and
``context``) and the shape or dtype it wanted and got.  Every entry of the
conformance registry is checked here under ``jax.eval_shape``: nothing is
compiled or computed.
"""

import re

import jax
import jax.numpy as jnp
import pytest

from jaxflows._checks import bijector_spec, checked_bijector, relabel
from registry import FLOW_REGISTRY, REGISTRY

ENTRIES = {**REGISTRY, **FLOW_REGISTRY}


def _raises(exc, pattern, fn, *args):
    with pytest.raises(exc) as info:
        jax.eval_shape(fn, *args)
    assert re.search(pattern, str(info.value)), f"{str(info.value)!r} does not match {pattern!r}"


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_wrong_input_names_method_argument_and_shapes(name):
    bijector, kwargs = ENTRIES[name]()
    dim, cdim = kwargs["dim"], kwargs.get("context_dim")
    params = jax.eval_shape(bijector.init, jax.random.PRNGKey(0))
    ctx = None if cdim is None else jnp.zeros((cdim,))
    fwd = lambda p, v, c: bijector.forward(p, v, c)  # noqa: E731
    inv = lambda p, v, c: bijector.inverse(p, v, c)  # noqa: E731
    one = r"must be one event of shape \(%d,\), got shape \(%s\)"
    _raises(ValueError, r"\.forward: z " + one % (dim, f"{dim + 1},"), fwd, params, jnp.zeros(dim + 1), ctx)
    _raises(ValueError, r"\.inverse: x " + one % (dim, f"2, {dim}"), inv, params, jnp.zeros((2, dim)), ctx)
    _raises(ValueError, r"\.forward: z " + one % (dim, ""), fwd, params, jnp.zeros(()), ctx)
    _raises(TypeError, r"\.forward: z must be a floating-point array .*got dtype int32", fwd, params,
            jnp.zeros(dim, jnp.int32), ctx)
    _raises(TypeError, r"\.inverse: x must be a floating-point array .*got dtype bool", inv, params,
            jnp.zeros(dim, bool), ctx)
    z = jnp.zeros(dim)
    if cdim is None:
        _raises(ValueError, r"\.forward: this bijector takes no context \(context_dim=None\), but a "
                r"context of shape \(2,\) was given", fwd, params, z, jnp.zeros(2))
    else:
        _raises(ValueError, r"\.forward: this bijector is conditional \(context_dim=%d\)" % cdim,
                fwd, params, z, None)
        _raises(ValueError, r"\.inverse: context must have shape \(%d,\) for one event, got shape "
                r"\(%d,\)" % (cdim, cdim + 1), inv, params, z, jnp.zeros(cdim + 1))
        _raises(TypeError, r"\.inverse: context must be a floating-point array", inv, params, z,
                jnp.zeros(cdim, jnp.int32))


CHECKED = sorted(n for n in REGISTRY if bijector_spec(REGISTRY[n]()[0]) is not None)


def test_every_factory_of_the_package_is_checked():
    """Only the composites (chain, stack and what is built from them) leave the checks
    to their parts."""
    unchecked = {n for n in REGISTRY if n not in CHECKED}
    assert unchecked == {"chain", "chain_context", "stack", "stack_per_layer_orders"}, unchecked


@pytest.mark.parametrize("name", ["act_norm", "maf_layer_context", "affine_coupling_random_mask_context",
                                  "elementwise_spline", "invert_iaf_layer"])
def test_checks_add_nothing_to_the_traced_computation(name):
    """The checks are static (shapes and dtypes at trace time): the jaxpr of a checked
    map is the jaxpr of the map it wraps."""
    bijector, kwargs = REGISTRY[name]()
    params = jax.eval_shape(bijector.init, jax.random.PRNGKey(0))
    v = jnp.zeros(kwargs["dim"])
    c = None if kwargs.get("context_dim") is None else jnp.zeros(kwargs["context_dim"])
    for fn in (bijector.forward, bijector.inverse):
        assert str(jax.make_jaxpr(fn)(params, v, c)) == str(jax.make_jaxpr(fn.unchecked)(params, v, c))


def test_checked_bijector_arguments_and_labels():
    calls = []

    def forward(params, z, context):
        calls.append((z.dtype, context))
        return 2.0 * z, jnp.log(2.0) * z.shape[0]

    def inverse(params, x, context):
        return x / 2.0, -jnp.log(2.0) * x.shape[0]

    b = checked_bijector("double", 2, lambda k: {}, forward, inverse, context_dim=1)
    b.forward({}, [1.0, 2.0], [0.5])  # lists become float arrays
    assert calls[0][0] == jnp.float32 and calls[0][1].shape == (1,)
    assert bijector_spec(b) == ("double", 2, 1)
    with pytest.raises(ValueError, match=r"^renamed\.inverse: x must be one event"):
        relabel(b, "renamed").inverse({}, jnp.zeros(3), jnp.zeros(1))
    with pytest.raises(ValueError, match="dim must be a positive integer, got True"):
        checked_bijector("bad", True, b.init, forward, inverse)
    with pytest.raises(ValueError, match="context_dim must be a positive integer, got 0"):
        checked_bijector("bad", 2, b.init, forward, inverse, context_dim=0)
    # a bijector whose maps were replaced is no longer the checked one
    assert bijector_spec(b._replace(inverse=inverse)) is None
    assert relabel(b._replace(inverse=inverse), "x").inverse is inverse
