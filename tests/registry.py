"""ONE registry of every bijector in jaxflows, for the conformance suite.

``REGISTRY[name]()`` returns ``(bijector, kwargs)`` where ``kwargs`` go to
``jaxflows.testing.check_bijector`` (``dim`` always; ``order`` for
autoregressive layers, ``unchanged`` for coupling layers, ``context_dim`` for
conditional ones).  Factories are lazy so that importing the registry builds
nothing; sizes are small (dim 3-5, hidden 8) to keep compilation cheap.

A new bijector joins the package -> it joins ``REGISTRY``; ``test_conformance``
runs every entry in float32 and again in float64 (under ``jax.enable_x64(True)``).  ``FLOW_REGISTRY``
holds whole flows' bijectors (compositions of registered parts), run in float32.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxflows import flows
from jaxflows.bijectors import (
    chain,
    elementwise_affine,
    fixed_affine,
    iaf_layer,
    logit,
    invert,
    maf_layer,
    permute,
    random_permutation,
    reverse,
    stack,
)
from jaxflows.bijectors.batchnorm import batch_norm
from jaxflows.bijectors.coupling import affine_coupling, alternating_mask, coupling, half_mask
from jaxflows.bijectors.linear import act_norm, lu_linear
from jaxflows.bijectors.spline import elementwise_spline, rational_quadratic_spline

D = 4  # default event size
H = (8,)  # default hidden sizes
C = 2  # context size
RANDOM_ORDER = np.random.default_rng(1).permutation(D)
RANDOM_MASK = np.array([True, False, False, True])


def _spline():
    return rational_quadratic_spline(num_bins=4, bound=3.0)


def _ar(layer, *, order=None, **kw):
    """An autoregressive layer with its triangularity check.

    tanh by default: with ReLU and 8 hidden units all units feeding an output
    can be dead at the random test point, which makes the Jacobian diagonal and
    fails the "ignores earlier variables" check by chance (ReLU entries use
    wider layers)."""
    order_kw = {} if order is None else {"order": order}
    kw.setdefault("activation", "tanh")
    return (layer(D, hidden=kw.pop("hidden", H), **order_kw, **kw),
            dict(dim=D, order=np.arange(D) if order is None else order,
                 context_dim=kw.get("context_dim")))


def _coupling(mask, transformer=None, **kw):
    b = (affine_coupling(D, mask, hidden=H, **kw) if transformer is None
         else coupling(D, transformer, mask, hidden=H, **kw))
    return b, dict(dim=D, unchanged=np.flatnonzero(mask), context_dim=kw.get("context_dim"))


def _flow(factory, dim=3, **kw):
    f = factory(dim, num_layers=2, hidden=H, **kw)
    return f.bijector, dict(dim=dim, context_dim=kw.get("context_dim"))


def _standardized_flow(factory, dim=3, **kw):
    from jaxflows import standardize
    f = standardize(factory(dim, num_layers=2, hidden=H, **kw), shift=[1.0, -2.0, 30.0],
                    scale=[0.5, 2.0, 10.0])
    return f.bijector, dict(dim=dim, context_dim=kw.get("context_dim"))


REGISTRY = {
    # autoregressive kernel, both orientations
    "maf_layer": lambda: _ar(maf_layer),
    "maf_layer_random_order": lambda: _ar(maf_layer, order=RANDOM_ORDER),
    "maf_layer_relu": lambda: _ar(maf_layer, hidden=(32,), activation="relu"),
    "maf_layer_context": lambda: _ar(maf_layer, hidden=(8, 8), context_dim=C),
    "maf_layer_residual": lambda: _ar(maf_layer, hidden=(8, 8), residual=True),
    "maf_layer_scan_inverse": lambda: _ar(maf_layer, order=RANDOM_ORDER, method="scan"),
    # conditioner inputs soft-clamped (bounded sampling amplification); small bound so the
    # clamp is active at the test points
    "maf_layer_input_bound": lambda: _ar(maf_layer, order=RANDOM_ORDER, input_bound=0.7),
    "maf_layer_input_bound_context": lambda: _ar(maf_layer, hidden=(8, 8), context_dim=C, input_bound=0.7),
    "iaf_layer": lambda: _ar(iaf_layer),
    "iaf_layer_random_order": lambda: _ar(iaf_layer, order=RANDOM_ORDER),
    "iaf_layer_context": lambda: _ar(iaf_layer, order=RANDOM_ORDER, context_dim=C),
    "iaf_layer_residual_context": lambda: _ar(iaf_layer, hidden=(8, 8), residual=True, context_dim=C),
    "maf_layer_spline": lambda: _ar(maf_layer, transformer=_spline(), order=RANDOM_ORDER),
    "maf_layer_spline_context": lambda: _ar(maf_layer, transformer=_spline(), context_dim=C),
    # element-wise
    "elementwise_affine": lambda: (elementwise_affine(D), dict(dim=D)),
    "elementwise_spline": lambda: (elementwise_spline(D, num_bins=4), dict(dim=D)),
    "elementwise_spline_tails": lambda: (elementwise_spline(D, num_bins=4, bound=1.0),
                                         dict(dim=D, input_scale=2.0)),
    # permutations
    "permute": lambda: (permute([2, 0, 3, 1]), dict(dim=D)),
    "reverse": lambda: (reverse(D), dict(dim=D)),
    "logit": lambda: (logit(D, alpha=0.05), dict(dim=D, data_domain=jax.nn.sigmoid)),
    "logit_pixels": lambda: (logit(D, alpha=1e-6, scale=256.0),
                             dict(dim=D, data_domain=lambda v: 256 * jax.nn.sigmoid(v))),
    "random_permutation": lambda: (random_permutation(5, seed=3), dict(dim=5)),
    # fixed affine (the standardisation inside jaxflows.standardize)
    "fixed_affine": lambda: (fixed_affine([1.0, -2.0, 0.5, 30.0], [0.5, 2.0, 1.5, 10.0]),
                             dict(dim=D)),
    # combinators
    "chain": lambda: (chain(maf_layer(D, hidden=H), reverse(D), elementwise_affine(D)), dict(dim=D)),
    "chain_context": lambda: (chain(maf_layer(D, hidden=H, context_dim=C),
                                    affine_coupling(D, alternating_mask(D), hidden=H, context_dim=C)),
                              dict(dim=D, context_dim=C)),
    "invert_iaf_layer": lambda: (invert(iaf_layer(D, hidden=H, activation="tanh")),
                                 dict(dim=D, order=np.arange(D))),
    "stack": lambda: (stack(chain(affine_coupling(D, alternating_mask(D), hidden=H), reverse(D)), 3),
                      dict(dim=D)),
    "stack_per_layer_orders": lambda: (
        stack(lambda o: iaf_layer(D, hidden=H, order=o), 2,
              per_layer=np.stack([np.arange(D), RANDOM_ORDER])), dict(dim=D)),
    # coupling
    "affine_coupling": lambda: _coupling(alternating_mask(D)),
    "affine_coupling_half_mask": lambda: _coupling(half_mask(D, 1)),
    "affine_coupling_random_mask_context": lambda: _coupling(RANDOM_MASK, context_dim=C),
    "spline_coupling": lambda: _coupling(alternating_mask(D, 1), _spline()),
    "spline_coupling_context": lambda: _coupling(half_mask(D), _spline(), context_dim=C),
    # linear
    "lu_linear": lambda: (lu_linear(D), dict(dim=D)),
    "lu_linear_permuted": lambda: (lu_linear(5, permutation_seed=0), dict(dim=5)),
    "act_norm": lambda: (act_norm(D), dict(dim=D)),
    # batch norm (eval mode; the training mode is tested in tests/bijectors/test_batchnorm.py)
    "batch_norm": lambda: (batch_norm(D), dict(dim=D)),
}

# Whole flows' bijectors (every factory, conditional and with batch norm): compositions of
# the entries above, so they run in float32 only (test_conformance) to keep the suite fast.
FLOW_REGISTRY = {
    "iaf_flow_context_batch_norm": lambda: _flow(flows.iaf, context_dim=C, batch_norm=True),
    "realnvp_flow": lambda: _flow(flows.realnvp),
    "realnvp_flow_context_batch_norm": lambda: _flow(flows.realnvp, context_dim=C, batch_norm=True),
    "nsf_flow": lambda: _flow(flows.nsf, num_bins=4),
    "maf_flow_standardized_context": lambda: _standardized_flow(flows.maf, context_dim=C),
    "nsf_coupling_flow_context": lambda: _flow(flows.nsf, num_bins=4, coupling_layers=True, context_dim=C),
}
