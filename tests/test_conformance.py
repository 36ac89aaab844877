"""Every bijector in ``tests/registry.py`` through ``check_bijector``.

float32: one test per registry entry and per whole-flow bijector.  float64: the
same registry again, each entry inside ``with jax.enable_x64(True):``.  Four
checks do not depend on the dtype, so a registry entry makes each once: vmap
equals a loop and finite gradients in its float32 item; the log-dets against
the Jacobians with their triangular structure, and the comparison of the
compiled bijector with an op-by-op (eager) call, in its float64 item, where the
tolerance is tighter (the whole-flow bijectors, checked in float32 only, make
all four there).  That
context manager sets JAX's x64 flag for the current thread only and restores
it on exit (jit caches are keyed on the flag, so nothing compiled in float64
is reused in float32), so the float64 items run in the same pytest process as
every other test without leaking into them; ``conftest.py`` fails any test
that leaves the flag on.
"""

import jax
import jax.numpy as jnp
import pytest

from jaxflows.testing import check_bijector
from registry import FLOW_REGISTRY, REGISTRY


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_float32(name):
    bijector, kwargs = REGISTRY[name]()
    check_bijector(bijector, dtype=jnp.float32, check_inputs=True, check_eager=False,
                   check_jacobians=False, **kwargs)


@pytest.mark.parametrize("name", sorted(FLOW_REGISTRY))
def test_flow_bijectors_float32(name):
    bijector, kwargs = FLOW_REGISTRY[name]()
    check_bijector(bijector, dtype=jnp.float32, check_inputs=True, **kwargs)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_float64(name):
    with jax.enable_x64(True):
        bijector, kwargs = REGISTRY[name]()
        check_bijector(bijector, dtype=jnp.float64, check_inputs=True, check_transforms=False,
                       **kwargs)
    assert not jax.config.jax_enable_x64


def test_registry_names_every_public_bijector():
    """A bijector factory exported by ``jaxflows.bijectors`` without a registry
    entry fails here (entries are matched by name prefix)."""
    import jaxflows.bijectors as jb

    public = {n for n in getattr(jb, "__all__", []) if n not in NOT_BIJECTORS}
    missing = {n for n in public if not any(k.startswith(n) or n in k for k in REGISTRY)}
    assert not missing, f"bijectors without a conformance entry in tests/registry.py: {sorted(missing)}"


# exported names that are not bijector factories (transformers, helpers)
NOT_BIJECTORS = {
    "affine", "autoregressive", "elementwise", "rational_quadratic_spline",
    "spline_num_params", "spline_knots", "to_distrax_kwargs", "alternating_mask", "half_mask",
    "batch_norm_train", "split_state", "merge_state", "stack_with_batch_norm",
    "actnorm_init_from_data",
}
