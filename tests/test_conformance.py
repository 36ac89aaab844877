"""Every bijector in ``tests/registry.py`` through ``check_bijector``.

float32 runs here, one test per registry entry.  float64 needs
``jax_enable_x64``, a process-wide switch that must not leak into the other
tests, so :func:`test_registry_float64` runs ``tests/conformance_x64.py`` (the
same registry in float64; not collected on its own) in a fresh pytest process.
"""

import os
import subprocess
import sys

import jax.numpy as jnp
import pytest

from jaxflows.testing import check_bijector
from registry import FLOW_REGISTRY, REGISTRY

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_float32(name):
    bijector, kwargs = REGISTRY[name]()
    check_bijector(bijector, dtype=jnp.float32, check_inputs=True, **kwargs)


@pytest.mark.parametrize("name", sorted(FLOW_REGISTRY))
def test_flow_bijectors_float32(name):
    bijector, kwargs = FLOW_REGISTRY[name]()
    check_bijector(bijector, dtype=jnp.float32, check_inputs=True, **kwargs)


X64_SHARDS = 2


@pytest.mark.parametrize("shard", range(X64_SHARDS))
def test_registry_float64(shard):
    """Each shard runs every X64_SHARDS-th registry entry, so pytest-xdist can spread them."""
    names = sorted(REGISTRY)[shard::X64_SHARDS]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
         os.path.join(HERE, "conformance_x64.py"), "-k", " or ".join(f"[{n}]" for n in names)],
        cwd=os.path.dirname(HERE), capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, f"float64 conformance failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    assert f"{len(names)} passed" in proc.stdout, proc.stdout[-2000:]


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
    "check_mask", "batch_norm_train", "split_state", "merge_state", "has_state",
    "stack_with_batch_norm", "actnorm_init_from_data", "init_from_data", "STATE_KEYS",
}
