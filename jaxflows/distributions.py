"""Base distributions as pure functions over one event ``(dim,)``.

Each factory returns a ``Distribution(init, log_prob, sample, dim)``:
``log_prob(params, x: (dim,)) -> ()`` and
``sample(params, key, sample_shape) -> sample_shape + (dim,)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ._types import Distribution
from .distrax_support import distrax_base, is_distrax_distribution

_LOG_2PI = math.log(2 * math.pi)


def standard_normal(dim: int) -> Distribution:
    """``N(0, I)``: ``log p(x) = -||x||^2 / 2 - (dim / 2) log(2 pi)``; no params."""

    def init(key):
        del key
        return {}

    def log_prob(params, x):
        return -0.5 * jnp.sum(x**2, axis=-1) - 0.5 * dim * _LOG_2PI

    def sample(params, key, sample_shape=()):
        return jax.random.normal(key, tuple(sample_shape) + (dim,))

    return Distribution(init, log_prob, sample, dim, {"name": "normal", "kwargs": {}})


def diag_normal(dim: int) -> Distribution:
    """``N(loc, diag(exp(log_scale))^2)`` with learnable ``{"loc", "log_scale"}``
    (zeros at init: the standard normal)."""

    def init(key):
        del key
        return {"loc": jnp.zeros((dim,)), "log_scale": jnp.zeros((dim,))}

    def log_prob(params, x):
        u = (x - params["loc"]) * jnp.exp(-params["log_scale"])
        return -0.5 * jnp.sum(u**2, axis=-1) - jnp.sum(params["log_scale"]) - 0.5 * dim * _LOG_2PI

    def sample(params, key, sample_shape=()):
        eps = jax.random.normal(key, tuple(sample_shape) + (dim,), params["loc"].dtype)
        return params["loc"] + jnp.exp(params["log_scale"]) * eps

    return Distribution(init, log_prob, sample, dim, {"name": "diag_normal", "kwargs": {}})


def uniform(low, high) -> Distribution:
    """Uniform on the box ``[low, high]`` (static bounds, no params).

    ``log p(x) = -sum log(high - low)`` inside the box, ``-inf`` outside.
    """
    low = np.atleast_1d(np.asarray(low, dtype=np.float64))
    high = np.atleast_1d(np.asarray(high, dtype=np.float64))
    if low.shape != high.shape or low.ndim != 1:
        raise ValueError(f"low and high must be 1-D of the same shape, got {low.shape} and {high.shape}")
    if not np.all(high > low):
        raise ValueError("uniform needs high > low in every dimension")
    dim = low.shape[0]
    log_volume = float(np.sum(np.log(high - low)))

    def init(key):
        del key
        return {}

    def log_prob(params, x):
        inside = jnp.all((x >= low.astype(x.dtype)) & (x <= high.astype(x.dtype)), axis=-1)
        return jnp.where(inside, -log_volume, -jnp.inf).astype(x.dtype)

    def sample(params, key, sample_shape=()):
        u = jax.random.uniform(key, tuple(sample_shape) + (dim,))
        return low.astype(u.dtype) + (high - low).astype(u.dtype) * u

    return Distribution(init, log_prob, sample, dim,
                        {"name": "uniform", "kwargs": {"low": low.tolist(), "high": high.tolist()}})


def mixture_of_gaussians(dim: int, num_components: int = 5, *, init_spread: float = 1.0) -> Distribution:
    """A learnable mixture of ``K`` diagonal Gaussians (the MAF paper's "MAF MoG" base).

    ``p(x) = sum_k pi_k N(x; mu_k, diag(sigma_k^2))`` with ``pi = softmax(logits)``
    and ``sigma_k = exp(log_scale_k)``::

        log p(x) = logsumexp_k [log pi_k - 0.5 ||(x - mu_k) / sigma_k||^2
                                - sum_i log sigma_ki] - (dim / 2) log(2 pi)

    Params ``{"logits": (K,), "loc": (K, dim), "log_scale": (K, dim)}``:
    equal weights, unit scales and means drawn from ``init_spread * N(0, I)``
    at init (distinct means, so the components do not stay identical under
    gradient descent).  ``sample`` draws the component by ancestral sampling:
    samples are not reparameterised through the component choice (for the
    ELBO use ``log_prob`` of the drawn samples, which is differentiable).
    """
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    if not isinstance(num_components, (int, np.integer)) or num_components < 1:
        raise ValueError(f"num_components must be a positive integer, got {num_components!r}")

    def init(key):
        return {"logits": jnp.zeros((num_components,)),
                "loc": init_spread * jax.random.normal(key, (num_components, dim)),
                "log_scale": jnp.zeros((num_components, dim))}

    def log_prob(params, x):
        x = jnp.asarray(x)
        u = (x[..., None, :] - params["loc"]) * jnp.exp(-params["log_scale"])  # (..., K, dim)
        comp = -0.5 * jnp.sum(u**2, axis=-1) - jnp.sum(params["log_scale"], axis=-1)
        log_w = jax.nn.log_softmax(params["logits"])
        return jax.scipy.special.logsumexp(comp + log_w, axis=-1) - 0.5 * dim * _LOG_2PI

    def sample(params, key, sample_shape=()):
        k_c, k_e = jax.random.split(key)
        shape = tuple(sample_shape)
        idx = jax.random.categorical(k_c, params["logits"], shape=shape)
        eps = jax.random.normal(k_e, shape + (dim,), params["loc"].dtype)
        return params["loc"][idx] + jnp.exp(params["log_scale"][idx]) * eps

    return Distribution(init, log_prob, sample, dim, {"name": "mog", "kwargs": {
        "num_components": int(num_components), "init_spread": float(init_spread)}})


BASES = {"normal": standard_normal, "diag_normal": diag_normal, "mog": mixture_of_gaussians}

# Largest mixture a config may ask for (bounded before anything is built).
MAX_COMPONENTS = 100_000


def base_from_config(config, dim: int) -> Distribution:
    """Rebuild a base from its ``config`` (``{"name": ..., "kwargs": {...}}``,
    as recorded in ``Distribution.config``) for a flow of dimension ``dim``.

    Every field is checked (type, range, size) before anything is built, so a
    damaged or hostile config gives a ``ValueError``, never a huge allocation.
    """
    if not isinstance(config, dict) or set(config) != {"name", "kwargs"} \
            or not isinstance(config["kwargs"], dict):
        raise ValueError(f"a base config must be {{'name': ..., 'kwargs': {{...}}}}, got {config!r:.200}")
    name, kwargs = config["name"], config["kwargs"]
    allowed = {"normal": set(), "diag_normal": set(), "mog": {"num_components", "init_spread"},
               "uniform": {"low", "high"}}
    if name not in allowed:
        raise ValueError(f"unknown base {name!r:.100}; known: {sorted(allowed)}")
    unknown = set(kwargs) - allowed[name]
    if unknown:
        raise ValueError(f"base {name!r} takes no argument(s) {sorted(map(str, unknown))}")
    if name == "mog":
        k = kwargs.get("num_components", 5)
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_COMPONENTS:
            raise ValueError(f"base 'mog' needs num_components in [1, {MAX_COMPONENTS}], got {k!r:.100}")
        spread = kwargs.get("init_spread", 1.0)
        if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not math.isfinite(spread):
            raise ValueError(f"base 'mog' needs a finite init_spread, got {spread!r:.100}")
        return mixture_of_gaussians(dim, k, init_spread=float(spread))
    if name == "uniform":
        bounds = [kwargs.get("low"), kwargs.get("high")]
        for which, b in zip(("low", "high"), bounds):
            if not isinstance(b, list) or len(b) != dim or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in b):
                raise ValueError(f"base 'uniform' needs {which} as a list of {dim} finite numbers")
        return uniform(*bounds)
    return BASES[name](dim)


def make_base(base, dim: int) -> Distribution:
    """A base from a name in ``BASES``, a ready ``Distribution`` or a
    ``distrax.Distribution`` (adapted by :func:`jaxflows.interop.distrax_base`)."""
    if isinstance(base, Distribution):
        if base.dim != dim:
            raise ValueError(f"base distribution has dim {base.dim}, flow has dim {dim}")
        return base
    if is_distrax_distribution(base):
        return distrax_base(base, dim)
    try:
        return BASES[base](dim)
    except (KeyError, TypeError):
        raise ValueError(
            f"base must be one of {sorted(BASES)}, a Distribution or a distrax distribution, got {base!r}"
        ) from None
