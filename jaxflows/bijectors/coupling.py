"""Masked coupling layers (Dinh et al. 2017, "Density estimation using Real NVP").

``coupling(dim, transformer, mask)`` splits one event by a binary ``mask``:
coordinates with ``mask == 1`` condition, the others are transformed
element-wise by any :class:`~jaxflows.Transformer`::

    theta = NN(z * mask, context)                       (dim, P)
    forward:  x_i = z_i                        if mask_i
              x_i = tau(z_i; theta_i)          otherwise
    inverse:  z_i = tau^-1(x_i; theta_i)       (theta from x * mask = z * mask)
    log_det_fwd = sum_{i: not mask_i} log|tau'(z_i; theta_i)|,  log_det_inv = -log_det_fwd

Both directions are one parallel network pass (the Jacobian is block
triangular: the conditioning block is the identity).  The conditioner reads
the *masked full vector* ``z * mask`` (equal to ``x * mask``; distrax's ``MaskedCoupling`` layout)
and emits parameters for every coordinate; the unused ones are discarded.  By
default it is the plain MLP of :func:`jaxflows.nn.mlp_init`; ``conditioner=``
takes any network (a :class:`jaxflows.conditioners.Conditioner`, e.g. a
``flax.linen`` module through :func:`jaxflows.nn.from_linen`): it needs no
structure, since the mask, not the network, keeps the layer invertible.  Because nothing is gathered
by the mask, the mask may be a traced array, so layers with different masks
can be stacked under ``lax.scan`` (see ``jaxflows.flows.realnvp``).  The last
layer starts at zero: every coupling layer starts as the identity.

Params: the conditioner's (the MLP's ``{"layers": (...), ["c": (context_dim,
hidden[0])]}``; a flax module's variables ``{"params": {...}}``).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import jax.numpy as jnp
import numpy as np

from .._checks import check_dim, checked_bijector, relabel
from .._types import Bijector, Transformer
from ..conditioners import bind, mlp
from .elementwise import affine
from .spline import rational_quadratic_spline


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


def _network(conditioner, hidden, activation):
    """The coupling network: ``conditioner``, or the built-in MLP with ``hidden`` and ``activation``."""
    if conditioner is None:
        return mlp((64, 64) if hidden is None else hidden, "relu" if activation is None else activation)
    if hidden is not None or activation is not None:
        raise ValueError("hidden= and activation= configure the built-in MLP; with conditioner= "
                         "set them on your network instead")
    return conditioner


def coupling(
    dim: int,
    transformer: Transformer,
    mask,
    *,
    hidden: Optional[Sequence[int]] = None,
    context_dim: Optional[int] = None,
    activation: Union[str, Callable, None] = None,
    conditioner=None,
) -> Bijector:
    """A masked coupling layer with any element-wise ``transformer`` (module docstring).

    ``mask`` is ``(dim,)`` booleans (``True`` = conditioning, passed through
    unchanged) as a static NumPy array, or a traced array when the layer is
    built inside ``stack(..., per_layer=masks)``.  ``forward`` applies
    ``transformer.forward`` to the other coordinates, ``inverse`` its inverse.

    The network: the built-in MLP with ``hidden`` sizes (default ``(64, 64)``)
    and ``activation`` (default ``"relu"``), or ``conditioner``, any
    :class:`~jaxflows.conditioners.Conditioner` or ``flax.linen`` module
    (wrapped by :func:`jaxflows.nn.from_linen`), called as
    ``apply(params, z * mask, context) -> (dim * transformer.num_params,)``.
    ``hidden`` and ``activation`` configure the built-in MLP only; give them
    together with ``conditioner`` and the layer refuses.
    """
    dim = check_dim(dim)
    if context_dim is not None and context_dim < 1:
        raise ValueError(f"context_dim must be None or a positive integer, got {context_dim}")
    if isinstance(mask, (list, tuple, np.ndarray)):
        mask = check_mask(mask, dim)
    num_params = transformer.num_params
    net = bind(_network(conditioner, hidden, activation), dim, dim * num_params, context_dim)

    def init(key):
        return net.init(key, dim, dim * num_params, context_dim)

    def _theta(params, v, context):
        m = jnp.asarray(mask, v.dtype)
        theta = net.apply(params, v * m, context)
        if theta.shape != (dim * num_params,):
            raise ValueError(f"the coupling conditioner returned shape {tuple(theta.shape)} for one event; "
                             f"the layer needs ({dim * num_params},) (dim * transformer.num_params)")
        return m, theta.reshape(dim, num_params).astype(v.dtype)

    def _apply(fn, params, v, context):
        m, theta = _theta(params, v, context)
        out, ld = fn(v, theta)
        keep = m > 0
        return jnp.where(keep, v, out), jnp.sum(jnp.where(keep, 0.0, ld))

    def forward(params, z, context):
        return _apply(transformer.forward, params, z, context)

    def inverse(params, x, context):
        return _apply(transformer.inverse, params, x, context)

    return checked_bijector("coupling", dim, init, forward, inverse, context_dim=context_dim)


def affine_coupling(dim: int, mask, *, min_scale: float = 1e-3, **kwargs) -> Bijector:
    """RealNVP's affine coupling: ``x_i = mu_i(z_m) + sigma_i(z_m) * z_i`` off the mask.

    - forward:  ``log_det = sum_{i not in mask} log sigma_i``
    - inverse:  ``z_i = (x_i - mu_i) / sigma_i``, ``log_det = -sum log sigma_i``

    ``sigma = softplus(s + c) + min_scale`` (see ``elementwise.affine``);
    keyword arguments go to :func:`coupling` (hidden, context_dim, activation,
    conditioner).
    """
    return relabel(coupling(dim, affine(min_scale), mask, **kwargs), "affine_coupling")


def spline_coupling(dim: int, mask, *, num_bins: int = 8, bound: float = 3.0, **kwargs) -> Bijector:
    """A neural-spline coupling layer (Durkan et al. 2019): off the mask,
    ``x_i = tau(z_i; theta_i(z_m))`` with ``tau`` the rational-quadratic
    spline of ``num_bins`` bins on ``[-bound, bound]`` (identity outside).

    ``log_det = sum_{i not in mask} log tau'(x_i)``.  Keyword arguments go to
    :func:`coupling` (hidden, context_dim, activation, conditioner).
    """
    return relabel(coupling(dim, rational_quadratic_spline(int(num_bins), float(bound)), mask, **kwargs),
                   "spline_coupling")
