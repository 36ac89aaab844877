"""Fixed permutations of the event dimensions (log-det 0, no params)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .._checks import check_dim, checked_bijector, relabel
from .._types import Bijector


def permute(permutation) -> Bijector:
    """``x = z[permutation]`` (forward), ``z = x[argsort(permutation)]`` (inverse).

    The permutation is a static NumPy constant, never a parameter.  Both
    log-dets are 0.  Takes no context.
    """
    perm = np.asarray(permutation)
    dim = perm.shape[0] if perm.ndim == 1 else -1
    if perm.ndim != 1 or dim < 1 or not np.array_equal(np.sort(perm), np.arange(dim)):
        raise ValueError(f"permutation must be a permutation of range(n), n >= 1, got {permutation!r}")
    perm = perm.astype(np.int32)
    inv = np.argsort(perm).astype(np.int32)

    def init(key):
        del key
        return {}

    def forward(params, z, context):
        return z[perm], jnp.zeros((), z.dtype)

    def inverse(params, x, context):
        return x[inv], jnp.zeros((), x.dtype)

    return checked_bijector("permute", dim, init, forward, inverse)


def reverse(dim: int) -> Bijector:
    """Reverse the order of the dimensions (the MAF paper's default)."""
    return relabel(permute(np.arange(check_dim(dim))[::-1]), "reverse")


def random_permutation(dim: int, seed: int) -> Bijector:
    """A fixed random permutation drawn from ``numpy.random.default_rng(seed)``;
    the seed is configuration, so a checkpoint can rebuild it."""
    return relabel(permute(np.random.default_rng(seed).permutation(check_dim(dim))), "random_permutation")
