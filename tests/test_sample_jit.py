"""``flow.sample`` under ``jax.jit``: a traced ``sample_shape`` gets an error that says how to jit."""

import jax
import pytest

import jaxflows as jf


@pytest.fixture(scope="module")
def flow_params():
    flow = jf.maf(2, num_layers=1, hidden=(8,))
    return flow, flow.init(jax.random.PRNGKey(0))


@pytest.mark.parametrize("shape", [(5,), 5])
@pytest.mark.parametrize("method", ["sample", "sample_and_log_prob"])
def test_traced_sample_shape_says_how(flow_params, shape, method):
    flow, params = flow_params
    with pytest.raises(TypeError, match="static_argnums=2"):
        jax.jit(getattr(flow, method))(params, jax.random.PRNGKey(1), shape)


def test_static_sample_shape_under_jit(flow_params):
    flow, params = flow_params
    x = jax.jit(flow.sample, static_argnums=2)(params, jax.random.PRNGKey(1), (5,))
    assert x.shape == (5, 2)
    assert jax.jit(lambda p, k: flow.sample(p, k, 3))(params, jax.random.PRNGKey(1)).shape == (3, 2)


@pytest.mark.parametrize("bad", [(2.5,), "ab", (-1,)])
def test_bad_sample_shape(flow_params, bad):
    flow, params = flow_params
    with pytest.raises((TypeError, ValueError), match="sample_shape"):
        flow.sample(params, jax.random.PRNGKey(1), bad)
