"""The autoregressive kernel: one implementation, two orientations.

``autoregressive(dim, transformer, ...)`` builds the bijector

    forward  (parallel):    b_i = tau(a_i; theta_i(a_<i)),  theta = MADE(a)
    inverse  (sequential):  a_i = tau^-1(b_i; theta_i(a_<i)), i in ``order``

``forward`` is ONE MADE pass over all dimensions; ``inverse`` is ``dim`` MADE
passes in a ``lax.scan`` (each step fixes the next variable in ``order``).
``log_det_fwd = sum_i log|tau'(a_i; theta_i)|`` and ``log_det_inv`` is its
negative (accumulated step by step: ``theta_i`` is final once ``a_<i`` is).

With the affine transformer ``tau(u) = mu + sigma * u`` (seed 003):

- :func:`iaf_layer` is the kernel as is, with ``a = z``, ``b = x``:
  ``x_i = mu_i(z_<i) + sigma_i(z_<i) * z_i``; sampling (forward) is the
  parallel pass, the density of an arbitrary ``x`` (inverse) is sequential.
- :func:`maf_layer` is ``invert(kernel)`` with the inverse affine transformer,
  ``a = x``, ``b = z``: density (inverse) computes
  ``z_i = (x_i - mu_i(x_<i)) / sigma_i(x_<i)`` in one pass, and sampling
  (forward) solves ``x_i = mu_i(x_<i) + sigma_i(x_<i) * z_i`` sequentially.

Both keep the source notes' formula ``x_i = mu_i + sigma_i * z_i`` literally;
they differ only in which side the conditioner reads.  The Jacobian of either
direction is triangular in ``order``: output ``i`` depends on inputs ``<= i``.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_context, check_event
from .._types import Bijector, Transformer
from ..nn import check_order, made_apply, made_config, made_init
from .combinators import invert
from .elementwise import affine, invert_transformer


def autoregressive(
    dim: int,
    transformer: Transformer,
    *,
    hidden: Sequence[int] = (64, 64),
    context_dim: Optional[int] = None,
    order=None,
    residual: bool = False,
    activation: Union[str, Callable] = "relu",
) -> Bijector:
    """The autoregressive kernel (module docstring): parallel ``forward``,
    sequential ``inverse``.

    ``order`` is a static permutation of ``range(dim)`` (default natural order)
    or a traced int array (per-layer orders scanned by ``stack``).
    Params: the MADE's (see ``jaxflows.nn``), output layer zero at init so the
    layer starts as the identity map.
    """
    cfg = made_config(dim, hidden, transformer.num_params, context_dim=context_dim, residual=residual)
    if order is None or isinstance(order, (list, tuple, np.ndarray)):
        order = check_order(order, dim)

    def init(key):
        return made_init(key, cfg)

    def conditioner(params, a, context):
        return made_apply(params, a, cfg, order, context, activation)

    def forward(params, a, context=None):
        a = check_event(a, dim)
        context = check_context(context, context_dim)
        theta = conditioner(params, a, context)
        b, ld = transformer.forward(a, theta.astype(a.dtype))
        return b, jnp.sum(ld)

    def inverse(params, b, context=None):
        b = check_event(b, dim, "y")
        context = check_context(context, context_dim)

        def step(a, i):
            theta_i = conditioner(params, a, context)[i].astype(b.dtype)
            a_i, ld_i = transformer.inverse(b[i], theta_i)
            return a.at[i].set(a_i), ld_i

        a, lds = jax.lax.scan(step, jnp.zeros_like(b), jnp.asarray(order))
        return a, jnp.sum(lds)

    return Bijector(init, forward, inverse)


def iaf_layer(dim: int, *, min_scale: float = 1e-3, **kwargs) -> Bijector:
    """Inverse autoregressive flow layer: ``x_i = mu_i(z_<i) + sigma_i(z_<i) * z_i``.

    - forward (z -> x): one parallel MADE pass; ``log_det = sum_i log sigma_i``
    - inverse (x -> z): ``dim`` sequential passes; ``log_det = -sum_i log sigma_i``

    ``sigma = softplus(s + c) + min_scale`` (see ``elementwise.affine``).
    Keyword arguments go to :func:`autoregressive` (hidden, context_dim, order,
    residual, activation).
    """
    return autoregressive(dim, affine(min_scale), **kwargs)


def maf_layer(dim: int, *, min_scale: float = 1e-3, transformer: Optional[Transformer] = None, **kwargs) -> Bijector:
    """Masked autoregressive flow layer: ``x_i = mu_i(x_<i) + sigma_i(x_<i) * z_i``.

    - inverse (x -> z, density): one parallel MADE pass,
      ``z_i = (x_i - mu_i) / sigma_i``; ``log_det = -sum_i log sigma_i``
    - forward (z -> x, sampling): ``dim`` sequential passes;
      ``log_det = sum_i log sigma_i``

    ``transformer`` replaces the affine map (for example a spline, giving an
    autoregressive neural spline flow); it is the data-side map ``x = tau(z)``.
    """
    t = transformer if transformer is not None else affine(min_scale)
    return invert(autoregressive(dim, invert_transformer(t), **kwargs))
