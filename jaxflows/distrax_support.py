"""distrax as an optional dependency: import it on first use, recognise its
distributions without importing it, and adapt one as a jaxflows base.

``distrax_base(dist, dim)`` -> a ``jaxflows.Distribution`` calling a distrax
distribution, so that any distrax distribution can be a flow's base
(``jaxflows.transformed(bijector, distrax_base(d), dim=...)``, or pass the
distrax distribution itself as ``base=``).  The other direction, jaxflows
objects as distrax objects, is :func:`jaxflows.interop.to_distrax`.

distrax's import-time ``DeprecationWarning`` about
``jax.core.pytype_aval_mappings`` is filtered.
"""

from __future__ import annotations

import sys
import warnings
from typing import Optional

from ._types import Distribution

__all__ = ["distrax_base", "is_distrax_distribution", "load_distrax"]


def load_distrax():
    """Import distrax, silencing its import-time deprecation warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pytype_aval_mappings.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="distrax")
        import distrax  # noqa: PLC0415
    return distrax


def is_distrax_distribution(obj) -> bool:
    """Whether ``obj`` is a ``distrax.Distribution``, without importing distrax."""
    mod = sys.modules.get("distrax")
    return mod is not None and isinstance(obj, mod.Distribution)


def distrax_base(dist, dim: Optional[int] = None) -> Distribution:
    """A ``jaxflows.Distribution`` that evaluates and samples a distrax distribution.

    ``dist`` must describe one event of shape ``(dim,)``: either
    ``event_shape == (dim,)`` and ``batch_shape == ()`` (e.g.
    ``distrax.MultivariateNormalDiag``), or a scalar distribution with
    ``batch_shape == (dim,)`` (e.g. ``distrax.Normal(zeros(d), ones(d))``),
    which is wrapped in ``distrax.Independent(dist, 1)``.

    The distrax distribution's parameters are constants of the returned base
    (``init`` returns ``{}``); to learn a base, use a jaxflows base such as
    ``"diag_normal"``.  ``log_prob(params, x: (dim,)) -> ()`` and
    ``sample(params, key, sample_shape) -> sample_shape + (dim,)``.
    """
    if not is_distrax_distribution(dist):
        raise TypeError(f"dist must be a distrax.Distribution, got {type(dist).__name__}")
    distrax = load_distrax()
    if dist.event_shape == () and len(dist.batch_shape) == 1:
        dist = distrax.Independent(dist, reinterpreted_batch_ndims=1)
    if len(dist.event_shape) != 1 or dist.batch_shape != ():
        raise ValueError(
            "dist must have event_shape (dim,) and batch_shape (), or be scalar with batch_shape "
            f"(dim,); got event_shape {dist.event_shape} and batch_shape {dist.batch_shape}"
        )
    event_dim = int(dist.event_shape[0])
    if dim is not None and dim != event_dim:
        raise ValueError(f"dist has event_shape ({event_dim},), expected dim={dim}")

    def init(key):
        del key
        return {}

    def log_prob(params, x):
        return dist.log_prob(x)

    def sample(params, key, sample_shape=()):
        if isinstance(sample_shape, int):
            sample_shape = (sample_shape,)
        return dist.sample(seed=key, sample_shape=tuple(sample_shape))

    return Distribution(init, log_prob, sample, event_dim)
