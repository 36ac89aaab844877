"""Bijectors: pure-function bundles ``Bijector(init, forward, inverse)``."""

from .autoregressive import autoregressive, iaf_layer, maf_layer
from .combinators import chain, invert, stack
from .elementwise import affine, elementwise, elementwise_affine, invert_transformer
from .permute import permute, random_permutation, reverse

__all__ = [
    "affine", "autoregressive", "chain", "elementwise", "elementwise_affine", "iaf_layer",
    "invert", "invert_transformer", "maf_layer", "permute", "random_permutation", "reverse", "stack",
]
