"""Learnable linear bijectors: the LU-parameterised invertible map and ActNorm.

LU linear (Kingma & Dhariwal 2018, Glow's "invertible 1x1 convolution")::

    W = P L U,   L = I + strict_lower(lower),   U = strict_upper(upper) + diag(exp(log_diag))
    forward:  x = W z + bias                 log_det_fwd = sum(log_diag)
    inverse:  z = U^-1 L^-1 P^T (x - bias)   log_det_inv = -sum(log_diag)

``P`` is a fixed permutation (static, never a parameter; identity by default).
The determinant costs ``O(dim)`` and the inverse two triangular solves.
Params ``{"lower": (dim, dim), "upper": (dim, dim), "log_diag": (dim,),
"bias": (dim,)}`` (only the strict triangles of ``lower``/``upper`` are read),
all zero at init: the identity map.

ActNorm (Glow): a per-dimension affine map with **data-dependent
initialisation done by an explicit function** (no hidden "initialised" flag)::

    forward:  x = shift + exp(log_scale) * z    log_det_fwd = sum(log_scale)
    inverse:  z = (x - shift) * exp(-log_scale) log_det_inv = -sum(log_scale)

``params = actnorm_init_from_data(params, x_batch)`` sets ``shift`` to the
batch mean and ``log_scale`` to the log standard deviation of ``x_batch``
(data-side values reaching this layer, shape ``(n, dim)``), so the first
density pass maps the batch to zero mean and unit variance.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_batch, check_dim, checked_bijector
from .._types import Bijector


def lu_linear(dim: int, *, permutation_seed: Optional[int] = None) -> Bijector:
    """LU-parameterised invertible linear map ``x = P L U z + bias`` (module docstring).

    ``permutation_seed=None`` uses ``P = I``; an integer draws a fixed ``P``
    from ``numpy.random.default_rng(seed)``.  Takes no context.
    """
    dim = check_dim(dim)
    perm = np.arange(dim) if permutation_seed is None else np.random.default_rng(permutation_seed).permutation(dim)
    perm = perm.astype(np.int32)
    inv_perm = np.argsort(perm).astype(np.int32)
    strict_lower = np.tril(np.ones((dim, dim), bool), -1)
    strict_upper = strict_lower.T

    def init(key):
        del key
        z = jnp.zeros((dim, dim))
        return {"lower": z, "upper": z, "log_diag": jnp.zeros((dim,)), "bias": jnp.zeros((dim,))}

    def _factors(params, dtype):
        lower = jnp.where(strict_lower, params["lower"], 0.0) + jnp.eye(dim, dtype=dtype)
        upper = jnp.where(strict_upper, params["upper"], 0.0) + jnp.diag(jnp.exp(params["log_diag"]))
        return lower.astype(dtype), upper.astype(dtype)

    def forward(params, z, context):
        lower, upper = _factors(params, z.dtype)
        x = (lower @ (upper @ z))[perm] + params["bias"].astype(z.dtype)  # P v = v[perm]
        return x, jnp.sum(params["log_diag"]).astype(z.dtype)

    def inverse(params, x, context):
        lower, upper = _factors(params, x.dtype)
        v = (x - params["bias"].astype(x.dtype))[inv_perm]
        v = jax.scipy.linalg.solve_triangular(lower, v, lower=True, unit_diagonal=True)
        z = jax.scipy.linalg.solve_triangular(upper, v, lower=False)
        return z, -jnp.sum(params["log_diag"]).astype(x.dtype)

    return checked_bijector("lu_linear", dim, init, forward, inverse)


def act_norm(dim: int) -> Bijector:
    """ActNorm ``x = shift + exp(log_scale) * z`` (module docstring).

    Params ``{"shift": (dim,), "log_scale": (dim,)}``, zero at init (the
    identity) until :func:`actnorm_init_from_data` sets them.  Takes no context.
    """
    dim = check_dim(dim)

    def init(key):
        del key
        return {"shift": jnp.zeros((dim,)), "log_scale": jnp.zeros((dim,))}

    def forward(params, z, context):
        log_scale = params["log_scale"].astype(z.dtype)
        return params["shift"].astype(z.dtype) + jnp.exp(log_scale) * z, jnp.sum(log_scale)

    def inverse(params, x, context):
        log_scale = params["log_scale"].astype(x.dtype)
        return (x - params["shift"].astype(x.dtype)) * jnp.exp(-log_scale), -jnp.sum(log_scale)

    return checked_bijector("act_norm", dim, init, forward, inverse)


def actnorm_init_from_data(params, x, *, eps: float = 1e-6):
    """Data-dependent ActNorm initialisation, as a pure function.

    ``x: (n, dim)`` are the data-side values that reach the layer (for the
    first layer of a density pass, the data itself).  Returns new params with
    ``shift = mean(x)`` and ``log_scale = log(std(x) + eps)`` so that
    ``inverse`` maps this batch to zero mean and unit variance per dimension.
    """
    dim = params["shift"].shape[0]
    x = check_batch(x, dim, "x")
    x = x.reshape((-1, dim))
    if x.shape[0] < 2:
        raise ValueError(f"actnorm_init_from_data needs at least 2 rows of x, got shape {tuple(x.shape)}")
    dtype = params["shift"].dtype
    return {"shift": jnp.mean(x, axis=0).astype(dtype),
            "log_scale": jnp.log(jnp.std(x, axis=0) + eps).astype(dtype)}
