"""Target distributions with exact log-densities and exact samplers.

A density estimator fitted to samples of a target ``p`` can be scored by how
close it gets to the truth, not only to other models:
``KL(p || q) = E_p[log p(x) - log q(x)]`` (nats, >= 0, 0 only for ``q = p``),
estimated from fresh samples of ``p`` (:func:`kl_to_target`).  The same
targets serve variational inference, where ``log_prob`` is the unnormalised
(here: normalised) log-density to fit.

Every target is a :class:`Target` of pure functions:
``sample(key, n) -> (n, dim)`` and ``log_prob(x: (..., dim)) -> (...)``.

- :func:`ring` (2-D, multimodal): equal mixture of ``k`` isotropic Gaussians on a circle.
- :func:`banana` (even dim, nonlinear): pairs ``y_a ~ N(0, 1)``,
  ``y_b | y_a ~ N(b (y_a^2 - 1), s^2)`` of curved ridges, mixed by a rotation.
- :func:`funnel` (any dim >= 2, varying scale): ``v ~ N(0, s_v^2)``,
  ``x_i | v ~ N(0, exp(v))`` for ``i >= 2`` (Neal's funnel, milder by default).
- :func:`gaussian_mixture` (any dim, multimodal): equal mixture of ``k``
  Gaussians with random means and random full covariances.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

LOG_2PI = math.log(2.0 * math.pi)


class Target(NamedTuple):
    """A distribution with exact ``log_prob`` and ``sample``."""

    name: str
    dim: int
    sample: Callable  # (key, n) -> (n, dim)
    log_prob: Callable  # (x: (..., dim)) -> (...)


def _check_dim(dim, least, name):
    if not isinstance(dim, (int, np.integer)) or dim < least:
        raise ValueError(f"{name}: dim must be an integer >= {least}, got {dim!r}")
    return int(dim)


def _check_x(x, dim, name):
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[-1] != dim:
        raise ValueError(f"{name}.log_prob: x must have shape (..., {dim}), got {x.shape}")
    return x


def _normal_logpdf(x, mean, log_std):
    return -0.5 * ((x - mean) * jnp.exp(-log_std)) ** 2 - log_std - 0.5 * LOG_2PI


def ring(num_modes: int = 8, radius: float = 4.0, std: float = 0.5) -> Target:
    """2-D: equal mixture of ``num_modes`` N(mu_k, std^2 I), means evenly on a circle."""
    if num_modes < 1 or radius < 0 or std <= 0:
        raise ValueError("ring: need num_modes >= 1, radius >= 0, std > 0")
    angles = 2.0 * np.pi * np.arange(num_modes) / num_modes
    means = jnp.asarray(radius * np.stack([np.cos(angles), np.sin(angles)], axis=1))

    def sample(key, n):
        kc, kn = jax.random.split(key)
        comp = jax.random.randint(kc, (n,), 0, num_modes)
        return means[comp] + std * jax.random.normal(kn, (n, 2))

    def log_prob(x):
        x = _check_x(x, 2, "ring")
        lp = jnp.sum(_normal_logpdf(x[..., None, :], means, math.log(std)), axis=-1)
        return jax.scipy.special.logsumexp(lp, axis=-1) - math.log(num_modes)

    return Target(f"ring{num_modes}", 2, sample, log_prob)


def banana(dim: int = 8, curvature: float = 0.5, noise: float = 0.5, seed: int = 0) -> Target:
    """Pairs of 2-D bananas, mixed by a fixed random rotation (``dim`` even).

    In each pair ``y_a ~ N(0, 1)``, ``y_b | y_a ~ N(curvature * (y_a^2 - 1), noise^2)``;
    then ``x = Q y`` with ``Q`` a random orthogonal matrix from ``seed``
    (``|det Q| = 1``, so ``log p(x) = log p_y(Q^T x)``): every coordinate
    depends nonlinearly on every other.
    """
    dim = _check_dim(dim, 2, "banana")
    if dim % 2:
        raise ValueError(f"banana: dim must be even, got {dim}")
    if noise <= 0:
        raise ValueError(f"banana: noise must be positive, got {noise}")
    log_noise = math.log(noise)
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    rot = jnp.asarray(q * np.sign(np.diag(r)))

    def sample(key, n):
        eps = jax.random.normal(key, (n, dim // 2, 2))
        a = eps[..., 0]
        b = curvature * (a**2 - 1.0) + noise * eps[..., 1]
        y = jnp.stack([a, b], axis=-1).reshape(n, dim)
        return y @ rot.T

    def log_prob(x):
        x = _check_x(x, dim, "banana")
        y = (x @ rot).reshape(x.shape[:-1] + (dim // 2, 2))
        a, b = y[..., 0], y[..., 1]
        lp = _normal_logpdf(a, 0.0, 0.0) + _normal_logpdf(b, curvature * (a**2 - 1.0), log_noise)
        return jnp.sum(lp, axis=-1)

    return Target(f"banana{dim}", dim, sample, log_prob)


def funnel(dim: int = 4, scale: float = 1.0) -> Target:
    """``v = x_1 ~ N(0, scale^2)``, ``x_i | v ~ N(0, exp(v))`` for ``i >= 2``."""
    dim = _check_dim(dim, 2, "funnel")
    if scale <= 0:
        raise ValueError(f"funnel: scale must be positive, got {scale}")

    def sample(key, n):
        kv, kx = jax.random.split(key)
        v = scale * jax.random.normal(kv, (n, 1))
        return jnp.concatenate([v, jnp.exp(0.5 * v) * jax.random.normal(kx, (n, dim - 1))], axis=1)

    def log_prob(x):
        x = _check_x(x, dim, "funnel")
        v = x[..., 0]
        lp_v = _normal_logpdf(v, 0.0, math.log(scale))
        return lp_v + jnp.sum(_normal_logpdf(x[..., 1:], 0.0, 0.5 * v[..., None]), axis=-1)

    return Target(f"funnel{dim}", dim, sample, log_prob)


def gaussian_mixture(dim: int = 16, num_modes: int = 4, separation: float = 3.0, seed: int = 0) -> Target:
    """Equal mixture of ``num_modes`` Gaussians: means ``N(0, separation^2 I)``,
    covariances ``L L^T`` with random lower-triangular ``L`` (diagonal in
    ``[0.5, 1.5]``, off-diagonal ``N(0, 0.3^2 / dim)``), drawn from ``seed``."""
    dim = _check_dim(dim, 1, "gaussian_mixture")
    rng = np.random.default_rng(seed)
    means = separation * rng.standard_normal((num_modes, dim))
    chols = np.tril(rng.normal(0.0, 0.3 / math.sqrt(dim), (num_modes, dim, dim)), -1)
    diag = rng.uniform(0.5, 1.5, (num_modes, dim))
    chols = chols + np.stack([np.diag(d) for d in diag])
    means_j, chols_j = jnp.asarray(means), jnp.asarray(chols)
    log_dets = jnp.asarray(np.sum(np.log(diag), axis=1))
    inv_chols = jnp.asarray(np.linalg.inv(chols))

    def sample(key, n):
        kc, kn = jax.random.split(key)
        comp = jax.random.randint(kc, (n,), 0, num_modes)
        eps = jax.random.normal(kn, (n, dim))
        return means_j[comp] + jnp.einsum("nij,nj->ni", chols_j[comp], eps)

    def log_prob(x):
        x = _check_x(x, dim, "gaussian_mixture")
        d = x[..., None, :] - means_j  # (..., K, dim)
        sol = jnp.einsum("kij,...kj->...ki", inv_chols, d)  # L_k^-1 (x - mu_k)
        lp = -0.5 * jnp.sum(sol**2, axis=-1) - log_dets - 0.5 * dim * LOG_2PI
        return jax.scipy.special.logsumexp(lp, axis=-1) - math.log(num_modes)

    return Target(f"mog{dim}", dim, sample, log_prob)


def kl_to_target(target: Target, log_q: Callable, key, n: int = 20000):
    """Estimate ``KL(p || q) = E_p[log p - log q]`` from ``n`` samples of ``p``.

    ``log_q(x: (n, dim)) -> (n,)`` is the model's log-density in the target's
    units.  Returns ``(mean, standard error)`` in nats as Python floats; a
    non-finite ``log_q`` anywhere gives ``inf``.
    """
    x = target.sample(key, n)
    diff = np.asarray(target.log_prob(x), np.float64) - np.asarray(log_q(x), np.float64)
    if not np.all(np.isfinite(diff)):
        return float("inf"), float("nan")
    return float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(n))


TARGETS = {
    "ring2": lambda: ring(),
    "banana8": lambda: banana(8),
    "funnel4": lambda: funnel(4),
    "mog16": lambda: gaussian_mixture(16),
}
