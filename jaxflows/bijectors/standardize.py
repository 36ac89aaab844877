"""A fixed (non-trainable) affine bijector: standardisation as part of a flow.

Flows are built for data of roughly zero mean and unit variance per column:
their layers start at the identity, spline layers act on ``[-bound, bound]``
and scale floors are absolute.  Raw data (pixels in ``0..255``, prices near
``1e8``) are brought there by the affine map ``z = (x - shift) / scale``.
Making that map a bijector of the flow, rather than a preprocessing step,
keeps everything in the data's own units: ``log p(x) = log q(z) -
sum_j log scale_j`` (the change-of-variables term is counted), samples come
out in data units, and the statistics travel with the flow's config into
checkpoints.  :func:`jaxflows.standardize` builds such a flow from data.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .._checks import checked_bijector
from .._types import Bijector


def check_affine_constants(shift, scale, dim=None):
    """``(shift, scale)`` as float64 NumPy ``(dim,)`` arrays; ``ValueError`` unless
    both are finite, 1-D, of one length (``dim`` if given) and ``scale > 0``."""
    shift = np.asarray(shift, np.float64)
    scale = np.asarray(scale, np.float64)
    if shift.ndim != 1 or scale.shape != shift.shape or shift.size == 0:
        raise ValueError(f"shift and scale must be 1-D arrays of one length (dim,), got shapes "
                         f"{shift.shape} and {scale.shape}")
    if dim is not None and shift.shape[0] != dim:
        raise ValueError(f"shift and scale must have shape ({dim},) for this flow, "
                         f"got {shift.shape}")
    if not (np.all(np.isfinite(shift)) and np.all(np.isfinite(scale))):
        raise ValueError("shift and scale must be finite")
    bad = np.flatnonzero(~(scale > 0))
    if bad.size:
        raise ValueError(f"scale must be positive in every column, got {float(scale[bad[0]])!r} in "
                         f"column {bad[0]}")
    return shift, scale


def fixed_affine(shift, scale) -> Bijector:
    """The fixed element-wise affine map ``x = shift + scale * z`` (no params).

    - forward (base side -> data side): ``x = shift + scale * z``,
      ``log_det_fwd = sum_j log scale_j``
    - inverse (data side -> base side): ``z = (x - shift) / scale``,
      ``log_det_inv = -sum_j log scale_j``

    ``shift`` and ``scale`` are constants ``(dim,)`` (finite, ``scale > 0``),
    kept in float64 and cast to the input's dtype; ``init`` returns ``{}``, so
    an optimizer has nothing to move.  Put it last in a chain (the data side):
    with ``shift``/``scale`` the training data's mean and standard deviation the
    rest of the flow sees standardised data.  No context.
    """
    shift, scale = check_affine_constants(shift, scale)
    dim = shift.shape[0]
    log_scale_sum = float(np.sum(np.log(scale)))

    def init(key):
        del key
        return {}

    def forward(params, z, context):
        x = z * scale.astype(z.dtype) + shift.astype(z.dtype)
        return x, jnp.asarray(log_scale_sum, z.dtype)

    def inverse(params, x, context):
        z = (x - shift.astype(x.dtype)) / scale.astype(x.dtype)
        return z, jnp.asarray(-log_scale_sum, x.dtype)

    return checked_bijector("fixed_affine", dim, init, forward, inverse)
