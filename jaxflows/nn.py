"""Networks: the MADE, plain MLPs, the cached sequential inversion, and your own networks.

One namespace for everything a flow's conditioner is built from:

- :mod:`jaxflows.made`: MADE, the masked autoencoder for distribution
  estimation (Germain et al. 2015) behind MAF, IAF and autoregressive NSF
  layers: ``made_config``, ``made_init``, ``made_apply``, ``masks``, degrees,
  ``squash_inputs``.
- :mod:`jaxflows.mlp`: the plain MLP of coupling layers (``mlp_init``,
  ``mlp_apply``) and the named ``ACTIVATIONS``.
- :mod:`jaxflows.cached_inverse`: ``made_sequential``, the sequential
  direction at the cost of about one MADE pass, and ``sequential_batch_tile``.
- :mod:`jaxflows.conditioners`: the ``Conditioner`` protocol and flax
  adapters (``from_linen``, ``MaskedDense``, ``made_degrees``,
  ``check_autoregressive``), so ``jaxflows.nn.from_linen`` etc. work too.
"""

from __future__ import annotations

from .cached_inverse import made_sequential, sequential_batch_tile
from .conditioners import Conditioner, MaskedDense, check_autoregressive, from_linen, made_degrees
from .made import (MadeConfig, check_order, hidden_degrees, hidden_min_degree, input_degrees, made_apply,
                   made_config, made_init, masks, squash_inputs, check_clamp, SQUASHES)
from .mlp import ACTIVATIONS, get_activation, mlp_apply, mlp_init

__all__ = [
    "ACTIVATIONS", "get_activation", "mlp_init", "mlp_apply",
    "MadeConfig", "made_config", "made_init", "made_apply", "masks", "hidden_degrees",
    "hidden_min_degree", "input_degrees", "check_order", "squash_inputs", "check_clamp", "SQUASHES",
    "made_sequential", "sequential_batch_tile",
    "Conditioner", "MaskedDense", "check_autoregressive", "from_linen", "made_degrees",
]
