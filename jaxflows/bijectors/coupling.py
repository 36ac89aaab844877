"""Masked coupling layers (Dinh et al. 2017, "Density estimation using Real NVP").

``coupling(dim, transformer, mask)`` splits one event by a binary ``mask``:
coordinates with ``mask == 1`` condition, the others are transformed
element-wise by any :class:`~jaxflows.Transformer`::

    theta = NN(x * mask, context)                       (dim, P)
    forward:  y_i = x_i                        if mask_i
              y_i = tau(x_i; theta_i)          otherwise
    inverse:  x_i = tau^-1(y_i; theta_i)       (theta from y * mask = x * mask)
    log_det_fwd = sum_{i: not mask_i} log|tau'(x_i; theta_i)|,  log_det_inv = -log_det_fwd

Both directions are one parallel network pass (the Jacobian is block
triangular: the conditioning block is the identity).  The conditioner is the
plain MLP of :func:`jaxflows.nn.mlp_init` reading the *masked full vector*
``x * mask`` (distrax's ``MaskedCoupling`` layout) and emitting parameters for
every coordinate; the unused ones are discarded.  Because nothing is gathered
by the mask, the mask may be a traced array, so layers with different masks
can be stacked under ``lax.scan`` (see ``jaxflows.flows.realnvp``).  The last
layer starts at zero: every coupling layer starts as the identity.

Params: the MLP's ``{"layers": (...), ["c": (context_dim, hidden[0])]}``.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import jax.numpy as jnp
import numpy as np

from .._checks import check_context, check_event
from .._types import Bijector, Transformer
from ..nn import mlp_apply, mlp_init
from .elementwise import affine


def check_mask(mask, dim: int) -> np.ndarray:
    """Validate a static mask: shape ``(dim,)`` of booleans / zeros and ones."""
    arr = np.asarray(mask)
    if arr.shape != (dim,):
        raise ValueError(f"mask must have shape ({dim},), got shape {arr.shape}")
    if arr.dtype != bool and not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"mask must hold booleans or 0/1 values, got {mask!r}")
    return arr.astype(bool)


def alternating_mask(dim: int, parity: int = 0) -> np.ndarray:
    """``mask_i = (i % 2 == parity)``: even (or odd) coordinates condition."""
    return (np.arange(dim) % 2) == (parity % 2)


def half_mask(dim: int, parity: int = 0) -> np.ndarray:
    """First ``ceil(dim / 2)`` coordinates condition (``parity=0``) or the rest (``parity=1``)."""
    first = np.arange(dim) < (dim + 1) // 2
    return first if parity % 2 == 0 else ~first


def coupling(
    dim: int,
    transformer: Transformer,
    mask,
    *,
    hidden: Sequence[int] = (64, 64),
    context_dim: Optional[int] = None,
    activation: Union[str, Callable] = "relu",
) -> Bijector:
    """A masked coupling layer with any element-wise ``transformer`` (module docstring).

    ``mask`` is ``(dim,)`` booleans (``True`` = conditioning, passed through
    unchanged) as a static NumPy array, or a traced array when the layer is
    built inside ``stack(..., per_layer=masks)``.  ``forward`` applies
    ``transformer.forward`` to the other coordinates, ``inverse`` its inverse.
    """
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if context_dim is not None and context_dim < 1:
        raise ValueError(f"context_dim must be None or a positive integer, got {context_dim}")
    if isinstance(mask, (list, tuple, np.ndarray)):
        mask = check_mask(mask, dim)
    num_params = transformer.num_params
    sizes = (dim,) + tuple(int(h) for h in hidden) + (dim * num_params,)

    def init(key):
        return mlp_init(key, sizes, context_dim=context_dim)

    def _theta(params, x, context):
        m = jnp.asarray(mask, x.dtype)
        theta = mlp_apply(params, x * m, context, activation)
        return m, theta.reshape(dim, num_params).astype(x.dtype)

    def _apply(fn, params, x, context):
        m, theta = _theta(params, x, context)
        out, ld = fn(x, theta)
        keep = m > 0
        return jnp.where(keep, x, out), jnp.sum(jnp.where(keep, 0.0, ld))

    def forward(params, x, context=None):
        x = check_event(x, dim)
        context = check_context(context, context_dim)
        return _apply(transformer.forward, params, x, context)

    def inverse(params, y, context=None):
        y = check_event(y, dim, "y")
        context = check_context(context, context_dim)
        return _apply(transformer.inverse, params, y, context)

    return Bijector(init, forward, inverse)


def affine_coupling(dim: int, mask, *, min_scale: float = 1e-3, **kwargs) -> Bijector:
    """RealNVP's affine coupling: ``y_i = mu_i(x_m) + sigma_i(x_m) * x_i`` off the mask.

    - forward:  ``log_det = sum_{i not in mask} log sigma_i``
    - inverse:  ``x_i = (y_i - mu_i) / sigma_i``, ``log_det = -sum log sigma_i``

    ``sigma = softplus(s + c) + min_scale`` (see ``elementwise.affine``);
    keyword arguments go to :func:`coupling` (hidden, context_dim, activation).
    """
    return coupling(dim, affine(min_scale), mask, **kwargs)
