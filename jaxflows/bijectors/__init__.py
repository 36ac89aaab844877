"""Bijectors: pure-function bundles ``Bijector(init, forward, inverse)``."""

from .autoregressive import autoregressive, iaf_layer, maf_layer
from .batchnorm import batch_norm, batch_norm_train, merge_state, split_state, stack_with_batch_norm
from .combinators import chain, invert, stack
from .coupling import affine_coupling, alternating_mask, coupling, half_mask, spline_coupling
from .elementwise import affine, elementwise, elementwise_affine, logit
from .linear import act_norm, actnorm_init_from_data, lu_linear
from .permute import permute, random_permutation, reverse
from .standardize import fixed_affine
from .spline import (elementwise_spline, rational_quadratic_spline, spline_knots, spline_num_params,
                     to_distrax_kwargs)

__all__ = [
    "act_norm", "actnorm_init_from_data", "affine", "affine_coupling", "alternating_mask",
    "autoregressive", "batch_norm", "batch_norm_train", "chain", "coupling", "elementwise",
    "elementwise_affine", "elementwise_spline", "fixed_affine", "half_mask", "iaf_layer", "invert",
    "logit", "lu_linear", "maf_layer", "merge_state", "permute", "random_permutation", "rational_quadratic_spline",
    "reverse", "spline_coupling", "spline_knots", "spline_num_params", "split_state", "stack", "stack_with_batch_norm",
    "to_distrax_kwargs",
]
