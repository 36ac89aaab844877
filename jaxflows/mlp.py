"""Plain MLPs and the activations every built-in network can use.

:func:`mlp_init` / :func:`mlp_apply` are the unmasked network of coupling
conditioners (Dinh et al. 2017); ``ACTIVATIONS`` names the activations a
config can record (a flow saved with a name can be rebuilt from a file).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from ._types import Array, Params, PRNGKey

__all__ = ["ACTIVATIONS", "get_activation", "check_hidden", "mlp_init", "mlp_apply"]

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "silu": jax.nn.silu,
    "identity": lambda x: x,
}


def get_activation(activation: Union[str, Callable]) -> Callable:
    if callable(activation):
        return activation
    try:
        return ACTIVATIONS[activation]
    except KeyError:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)} or a callable, got {activation!r}"
        ) from None



def check_hidden(hidden) -> Tuple[int, ...]:
    """Hidden layer sizes as a tuple of positive ints, or a clear ``TypeError``/``ValueError``."""
    try:
        hidden = tuple(int(h) for h in hidden)
    except TypeError:
        raise TypeError(f"hidden must be a sequence of ints, got {hidden!r}") from None
    if any(h < 1 for h in hidden):
        raise ValueError(f"hidden sizes must be positive, got {hidden}")
    return hidden


def mlp_init(key: PRNGKey, sizes: Sequence[int], *, context_dim: Optional[int] = None, dtype=None) -> Params:
    """A plain (unmasked) MLP ``sizes[0] -> ... -> sizes[-1]`` for coupling
    conditioners.  The last layer starts at zero (identity flow layers); the
    context, if any, feeds the first layer.

    Params: ``{"layers": ({"w": (n_in, n_out), "b": (n_out,)}, ...), ["c": (C, sizes[1])]}``.
    """
    dtype = dtype or jnp.zeros(()).dtype
    sizes = tuple(int(s) for s in sizes)
    keys = jax.random.split(key, len(sizes))
    layers = []
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = l == len(sizes) - 2
        w = jnp.zeros((n_in, n_out), dtype) if last else jax.random.normal(keys[l], (n_in, n_out), dtype) / np.sqrt(n_in)
        layers.append({"w": w, "b": jnp.zeros((n_out,), dtype)})
    params = {"layers": tuple(layers)}
    if context_dim is not None:
        scale = 0.0 if len(sizes) == 2 else 1.0 / np.sqrt(context_dim)
        params["c"] = scale * jax.random.normal(keys[-1], (context_dim, sizes[1]), dtype)
    return params


def mlp_apply(params: Params, x: Array, context: Optional[Array] = None,
              activation: Union[str, Callable] = "relu") -> Array:
    """Apply :func:`mlp_init`'s network to ``x: (sizes[0],)``."""
    act = get_activation(activation)
    layers = params["layers"]
    h = x
    for l, layer in enumerate(layers):
        h = h @ layer["w"] + layer["b"]
        if l == 0 and context is not None:
            h = h + context @ params["c"]
        if l < len(layers) - 1:
            h = act(h)
    return h
