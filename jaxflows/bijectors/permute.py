"""Fixed permutations of the event dimensions (log-det 0, no params)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .._checks import check_context, check_event
from .._types import Bijector


def permute(permutation) -> Bijector:
    """``y = x[permutation]`` (forward), ``x = y[argsort(permutation)]`` (inverse).

    The permutation is a static NumPy constant, never a parameter.  Both
    log-dets are 0.  Takes no context.
    """
    perm = np.asarray(permutation)
    dim = perm.shape[0] if perm.ndim == 1 else -1
    if perm.ndim != 1 or not np.array_equal(np.sort(perm), np.arange(dim)):
        raise ValueError(f"permutation must be a permutation of range(n), got {permutation!r}")
    perm = perm.astype(np.int32)
    inv = np.argsort(perm).astype(np.int32)

    def init(key):
        del key
        return {}

    def forward(params, x, context=None):
        x = check_event(x, dim)
        check_context(context, None)
        return x[perm], jnp.zeros((), x.dtype)

    def inverse(params, y, context=None):
        y = check_event(y, dim, "y")
        check_context(context, None)
        return y[inv], jnp.zeros((), y.dtype)

    return Bijector(init, forward, inverse)


def reverse(dim: int) -> Bijector:
    """Reverse the order of the dimensions (the MAF paper's default)."""
    return permute(np.arange(dim)[::-1])


def random_permutation(dim: int, seed: int) -> Bijector:
    """A fixed random permutation drawn from ``numpy.random.default_rng(seed)``;
    the seed is configuration, so a checkpoint can rebuild it."""
    return permute(np.random.default_rng(seed).permutation(dim))
