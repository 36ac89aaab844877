"""The conformance registry in float64 (run by ``test_conformance.test_registry_float64``
in its own process: enabling x64 here would leak into every other test).

Run directly with ``python -m pytest tests/conformance_x64.py``.
"""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402

from jaxflows.testing import check_bijector  # noqa: E402
from registry import REGISTRY  # noqa: E402


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_float64(name):
    assert jax.config.jax_enable_x64
    bijector, kwargs = REGISTRY[name]()
    check_bijector(bijector, dtype=jnp.float64, check_inputs=True, **kwargs)
