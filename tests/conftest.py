"""Suite-wide guards.

float64 tests run in the same process as the float32 ones, each inside
``with jax.enable_x64(True):`` (a thread-local switch restored on exit). A test
that turns x64 on and leaves it on would silently change the dtypes of every
later test in the same pytest-xdist worker, so any test that ends with x64
still enabled fails here, and the flag is switched back off for the next one.
"""

import jax
import pytest


@pytest.fixture(autouse=True)
def _x64_does_not_leak(request):
    before = bool(jax.config.jax_enable_x64)
    yield
    after = bool(jax.config.jax_enable_x64)
    if after and not before:
        jax.config.update("jax_enable_x64", False)
        pytest.fail(f"{request.node.nodeid} left jax_enable_x64 on: use `with jax.enable_x64(True):`",
                    pytrace=False)
