"""Trainable parameters vs state: the running statistics the optimiser must not move.

A flow with batch-norm layers (``batch_norm=True``) carries running averages
of the batch mean and variance in its params.  They change every training
step, but through the layer's own update rule
(:func:`jaxflows.bijectors.batch_norm_train`), never through a gradient.  So
the training loop splits the params::

    trainable, state = split_state(params)   # optimiser sees `trainable` only
    ...
    params = merge_state(trainable, state)

``state`` holds exactly the leaves whose dict key is in :data:`STATE_KEYS`
(``None`` elsewhere); ``trainable`` holds every other leaf (``None`` at the
state leaves).  optax ignores ``None`` subtrees, so an optimiser built on
``trainable`` never allocates moments for the running statistics.
"""

from __future__ import annotations

from typing import Tuple

import jax

__all__ = ["STATE_KEYS", "split_state", "merge_state", "has_state"]

STATE_KEYS = ("running_mean", "running_var")


def _is_state_path(path) -> bool:
    last = path[-1] if path else None
    return isinstance(last, jax.tree_util.DictKey) and last.key in STATE_KEYS


def split_state(params) -> Tuple[object, object]:
    """``(trainable, state)``: the same tree twice, with ``None`` in place of the
    state leaves (``STATE_KEYS``) in ``trainable`` and of every other leaf in
    ``state``.  Give the optimiser ``trainable`` only."""
    trainable = jax.tree_util.tree_map_with_path(lambda p, a: None if _is_state_path(p) else a, params)
    state = jax.tree_util.tree_map_with_path(lambda p, a: a if _is_state_path(p) else None, params)
    return trainable, state


def merge_state(trainable, state):
    """Inverse of :func:`split_state`."""
    return jax.tree_util.tree_map(lambda a, b: b if a is None else a, trainable, state,
                                  is_leaf=lambda v: v is None)


def has_state(params) -> bool:
    """Whether ``params`` holds any batch-norm running statistics."""
    return any(_is_state_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0])
