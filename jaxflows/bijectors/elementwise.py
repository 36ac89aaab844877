"""Element-wise maps: the affine transformer and element-wise bijectors.

A ``Transformer`` is a monotone scalar map ``v = tau(u; theta)`` applied to
every element; conditioners (MADE, coupling networks) produce its ``theta``.
A plain element-wise bijector learns one ``theta`` per dimension.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import checked_bijector, relabel
from .._types import Bijector, Transformer


def affine(min_scale: float = 1e-3) -> Transformer:
    """Affine transformer ``v = mu + sigma * u`` with ``theta = (mu, s)``.

    ``sigma = softplus(s + c) + min_scale`` with ``c = log(expm1(1 - min_scale))``
    so that ``s = 0`` gives ``sigma = 1`` exactly (identity at ``theta = 0``).

    Why softplus with a floor rather than ``exp``: ``exp(s)`` overflows to inf
    (then NaN) for large ``s`` early in training, while softplus grows linearly;
    the floor keeps ``log sigma >= log(min_scale)`` so no density or gradient can
    become infinite when ``s`` runs to ``-inf``.

    - forward:  ``v = mu + sigma * u``,   ``log|dv/du| = log sigma``
    - inverse:  ``u = (v - mu) / sigma``, ``log|du/dv| = -log sigma``
    """
    if not 0 < min_scale < 1:
        raise ValueError(f"min_scale must be in (0, 1), got {min_scale}")
    offset = float(np.log(np.expm1(1.0 - min_scale)))

    def _unpack(theta):
        shift = theta[..., 0]
        scale = jax.nn.softplus(theta[..., 1] + offset) + min_scale
        return shift, scale

    def forward(u, theta):
        shift, scale = _unpack(theta)
        return shift + scale * u, jnp.log(scale)

    def inverse(v, theta):
        shift, scale = _unpack(theta)
        return (v - shift) / scale, -jnp.log(scale)

    return Transformer(2, forward, inverse)


def elementwise(transformer: Transformer, dim: int) -> Bijector:
    """A learnable element-wise bijector: ``x_i = tau(z_i; theta_i)``.

    Params ``{"theta": (dim, P)}``, zero at init (the identity map).
    ``log_det_fwd = sum_i log|tau'(z_i; theta_i)|``; ``inverse`` applies
    ``tau^-1`` and returns the negative at the corresponding point.  Takes no
    context.
    """

    def init(key):
        del key
        return {"theta": jnp.zeros((dim, transformer.num_params))}

    def forward(params, z, context):
        x, ld = transformer.forward(z, params["theta"])
        return x, jnp.sum(ld)

    def inverse(params, x, context):
        z, ld = transformer.inverse(x, params["theta"])
        return z, jnp.sum(ld)

    return checked_bijector("elementwise", dim, init, forward, inverse)


def elementwise_affine(dim: int, min_scale: float = 1e-3) -> Bijector:
    """Element-wise affine ``x = mu + sigma * z`` with learnable
    ``theta = (mu, s)`` per dimension; see :func:`affine`."""
    return relabel(elementwise(affine(min_scale), dim), "elementwise_affine")


def logit(dim: int, *, alpha: float = 1e-6, scale: float = 1.0) -> Bijector:
    """The logit transform of bounded data (RealNVP/MAF image preprocessing) as a bijector.

    Data ``x`` live in ``[0, scale]`` (``scale=256`` for dequantised 8-bit
    pixels, ``1`` for data already in the unit interval); with
    ``s = alpha + (1 - 2 alpha) x / scale``:

    - inverse (x -> z, density side): ``z = log s - log(1 - s)``,
      ``log_det_inv = sum_i [log(1 - 2 alpha) - log(scale) - log s_i - log(1 - s_i)]``
    - forward (z -> x): ``x = scale * (sigmoid(z) - alpha) / (1 - 2 alpha)``,
      ``log_det_fwd = -log_det_inv`` at the corresponding point.

    Put it last in a chain (``chain(flow_bijector, logit(dim, scale=256))``)
    so that ``log_prob`` counts its log-det.  No params, no context.
    """
    if not 0 <= alpha < 0.5:
        raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    log_c = float(np.log1p(-2 * alpha) - np.log(scale))

    def init(key):
        del key
        return {}

    def inverse(params, x, context):
        s = alpha + (1 - 2 * alpha) * x / scale
        log_s, log_1ms = jnp.log(s), jnp.log1p(-s)
        return log_s - log_1ms, jnp.sum(log_c - log_s - log_1ms)

    def forward(params, z, context):
        s = jax.nn.sigmoid(z)
        # log s + log(1 - s) = -softplus(-z) - softplus(z), stable for any z
        ld = jnp.sum(-jax.nn.softplus(-z) - jax.nn.softplus(z) - log_c)
        return scale * (s - alpha) / (1 - 2 * alpha), ld

    return checked_bijector("logit", dim, init, forward, inverse)
