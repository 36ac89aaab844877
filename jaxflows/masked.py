"""Autoregressive user networks: flax layers that keep the MADE property, and the check.

An autoregressive flow layer (MAF, Papamakarios et al. 2017; IAF, Kingma et
al. 2016) needs a conditioner whose output for variable ``i`` reads only
``x_<i``.  :class:`MaskedDense` (a dense layer with a MADE mask, Germain et
al. 2015) wired with :func:`made_degrees` builds such networks in
``flax.linen``; :func:`check_autoregressive` refuses a network that breaks
the property (an autoregressive layer calls it when it is built).  All three
are re-exported by :mod:`jaxflows.conditioners` and :mod:`jaxflows.nn`.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .made import hidden_degrees
from .mlp import check_hidden

if TYPE_CHECKING:  # the protocol's module re-exports this one
    from .conditioners import Conditioner

__all__ = ["MaskedDense", "check_autoregressive", "made_degrees"]


def made_degrees(dim: int, hidden: Sequence[int], num_params: int = 1, *,
                 context: bool = False) -> Tuple[Tuple[int, ...], Tuple[Tuple[int, ...], ...], Tuple[int, ...]]:
    """MADE degrees for a network over ``dim`` variables in natural order.

    Returns ``(input_degrees, hidden_degrees, output_degrees)``: input ``i``
    has degree ``i + 1``; each hidden layer's units have degrees in
    ``1..dim-1`` (``0..dim-1`` with ``context=True``: degree-0 units read only
    the context, so the first variable's parameters can depend on it);
    output column ``i * num_params + p`` has degree ``i + 1``.  Wire
    :class:`MaskedDense` layers with them: ``strict=False`` into and between
    hidden layers, ``strict=True`` into the output.
    """
    if not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim!r}")
    ins = tuple(range(1, dim + 1))
    hid = tuple(tuple(int(d) for d in hidden_degrees(int(h), dim, 1 if context else None))
                for h in check_hidden(hidden))
    outs = tuple(int(d) for d in np.repeat(np.arange(1, dim + 1), int(num_params)))
    return ins, hid, outs


class MaskedDense(nn.Module):
    """A dense layer ``y = x @ (W * M) + b`` whose mask ``M`` keeps the
    autoregressive property (MADE, Germain et al. 2015).

    ``M[j, k] = 1`` iff ``in_degrees[j] <= out_degrees[k]`` (``strict=True``:
    ``<``, for the output layer).  Degrees come from :func:`made_degrees`.  The
    mask is rebuilt from the degrees at every call and never stored in the
    params, so training cannot break it.  Use it in place of ``nn.Dense`` in an
    autoregressive network: element-wise activations and residual sums of
    layers with equal degrees keep the property; anything that mixes units
    (``LayerNorm``, attention over units) does not.
    """

    features: int
    in_degrees: Tuple[int, ...]
    out_degrees: Tuple[int, ...]
    strict: bool = False
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        din = np.asarray(self.in_degrees)
        dout = np.asarray(self.out_degrees)
        if din.shape != (x.shape[-1],):
            raise ValueError(f"MaskedDense: in_degrees has {din.size} entries, the input has "
                             f"{x.shape[-1]} features")
        if dout.shape != (self.features,):
            raise ValueError(f"MaskedDense: out_degrees has {dout.size} entries, features={self.features}")
        mask = (din[:, None] < dout[None, :]) if self.strict else (din[:, None] <= dout[None, :])
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        y = x @ (kernel * jnp.asarray(mask, kernel.dtype))
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,))
        return y


_AR_CHECKED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def check_autoregressive(conditioner: Conditioner, dim: int, num_params: int,
                         context_dim: Optional[int] = None, *, seed: int = 0, trials: int = 2,
                         remember_on=None) -> None:
    """Refuse a network whose output for variable ``i`` reads ``x_i`` or a later input.

    The network is taken in natural order: row ``i`` of ``apply(params, x,
    context).reshape(dim, num_params)`` may depend on ``x[:i]`` (and the
    context) only.  Checked by the Jacobian ``d theta / d x`` at ``trials``
    random inputs, with the params of ``init`` plus ``N(0, 0.1^2)`` noise
    (so a last layer that starts at zero does not hide anything); masked
    connections give exact zeros there.  Raises ``ValueError`` naming the first
    offending output and input.  A passed check is remembered per network: on
    ``remember_on`` if given (a layer passes the network it was given, so a layer
    rebuilt at every trace, as a scan over layers does, is checked once), else on
    ``conditioner.init``.
    """
    cache_key = (int(dim), int(num_params), context_dim, int(seed), int(trials))
    try:
        seen = _AR_CHECKED.setdefault(conditioner.init if remember_on is None else remember_on, set())
    except TypeError:  # not weak-referenceable: check every time
        seen = set()
    if cache_key in seen:
        return
    with jax.ensure_compile_time_eval():  # concrete even when a layer is built under a trace
        jacobians = _probe_jacobians(conditioner, dim, num_params, context_dim, trials)(
            jax.random.PRNGKey(seed))
    after = np.arange(dim)[None, :] >= np.arange(dim)[:, None]  # [i, j]: input j not before i
    for J in jacobians:
        dep = np.any(np.asarray(J) != 0, axis=1)  # (dim, dim): row i reads input j
        bad = np.argwhere(dep & after)
        if bad.size:
            i, j = (int(v) for v in bad[0])
            cols = f"columns {i * num_params}..{(i + 1) * num_params - 1}" if num_params > 1 else f"column {i}"
            raise ValueError(
                f"conditioner is not autoregressive: row {i} of its output ({cols} of "
                f"({dim * num_params},)) depends on its input {j}, but row i may read inputs 0..i-1 "
                f"only (the layer feeds the network its variables in the layer's order and puts the "
                f"rows back). Build the network from jaxflows.nn.MaskedDense layers wired with "
                f"jaxflows.nn.made_degrees(...); layers that mix units (LayerNorm, attention) "
                f"break the property.")
    seen.add(cache_key)


def _probe_jacobians(conditioner, dim, num_params, context_dim, trials):
    """``key -> d theta / d x`` ``(trials, dim, num_params, dim)`` at ``trials`` random
    inputs, params perturbed, as one compiled program (op by op, each of the network's ops
    would compile apart)."""

    def run(key):
        k_init, k_noise, k_x, k_c = jax.random.split(key, 4)
        params = conditioner.init(k_init, dim, dim * num_params, context_dim)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        noise_keys = jax.random.split(k_noise, max(len(leaves), 1))
        leaves = [l + 0.1 * jax.random.normal(k, jnp.shape(l), jnp.result_type(l))
                  if jnp.issubdtype(jnp.result_type(l), jnp.floating) else l
                  for l, k in zip(leaves, noise_keys)]
        params = jax.tree_util.tree_unflatten(treedef, leaves)
        xs = jax.random.normal(k_x, (trials, dim))
        cs = None if context_dim is None else jax.random.normal(k_c, (trials, context_dim))

        def theta(v, ctx):
            t = conditioner.apply(params, v, ctx)
            if tuple(jnp.shape(t)) != (dim * num_params,):
                raise ValueError(f"conditioner returns shape {tuple(jnp.shape(t))}, the layer needs "
                                 f"({dim * num_params},) (dim * transformer.num_params)")
            return t.reshape(dim, num_params)

        return jax.vmap(jax.jacfwd(theta), in_axes=(0, None if cs is None else 0))(xs, cs)

    return jax.jit(run)
