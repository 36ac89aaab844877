"""The checks :func:`jaxflows.fit` runs before and after training.

Before: every argument but the data is refused, with a message naming it, when
it is out of range. After: a batch drawn from the fitted flow must be finite.
The NaN/Inf guard of the training step watches the loss, which can stay finite
while sampling (the other direction of the flow) has already broken down, e.g.
at a learning rate far too high on heavy-tailed data.
"""

from __future__ import annotations

import functools
import json
import numbers
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .flows import Flow
from .sharding import auto_mesh
from .steps import DIVERGENCE_ADVICE, FitWarning, TrainingDiverged
from .training_data import take

CHECK_SAMPLES = 64


def check_fit_arguments(*, batch_size, num_epochs, max_bad_steps, patience, val_fraction,
                        run_settings, resume, checkpoint_dir, mesh):
    """Refuse bad arguments of :func:`fit` (all but the data) with a message naming them."""
    auto_mesh(mesh)
    for name, value, least in (("batch_size", batch_size, 1), ("num_epochs", num_epochs, 0),
                               ("max_bad_steps", max_bad_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    if patience is not None and (not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be None or a positive integer, got {patience!r}")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir=")
    if run_settings is not None:
        if not isinstance(run_settings, dict):
            raise TypeError(f"run_settings must be a dict, got {type(run_settings).__name__}")
        try:
            json.dumps(run_settings, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"run_settings must hold JSON data (numbers, strings, lists, dicts): "
                            f"{err}") from None


@functools.lru_cache(maxsize=16)
def _compiled_draw(sample_and_log_prob: Callable, m: int, conditional: bool):
    shape = () if conditional else (m,)
    return jax.jit(lambda p, k, c: sample_and_log_prob(p, k, shape, c))


def check_fitted_samples(flow: Flow, params, key, context, history) -> None:
    """Draw a batch from the fitted flow: its samples and their log-densities
    must be finite. The NaN guard watches the loss, which can stay finite while
    sampling (the other direction of the flow) has already broken down."""
    m, ctx = CHECK_SAMPLES, None
    if flow.context_dim is not None:
        m = min(m, context.shape[0])
        if isinstance(context, jax.Array) and not context.is_fully_addressable:
            from .distributed import take_rows  # rows spread over processes: a local copy
            ctx = jnp.asarray(take_rows(context, np.arange(m), local=True))
        else:
            ctx = jnp.asarray(take(context, np.arange(m)))
    draw = _compiled_draw(flow.sample_and_log_prob, m, ctx is not None)
    x, lp = draw(params, jax.random.fold_in(key, 0x5AFE), ctx)
    bad = int(np.sum(~(np.isfinite(np.asarray(x)).all(axis=-1) & np.isfinite(np.asarray(lp)))))
    if bad == 0:
        return
    what = f"{bad} of {m} samples drawn from the fitted flow (or their log-densities) are NaN or Inf"
    if 2 * bad > m:
        raise TrainingDiverged(
            f"{what}, although the training loss stayed finite: the fit diverged. "
            f"{DIVERGENCE_ADVICE}", params=params, history=history,
            epoch=history["num_epochs_run"] - 1)
    warnings.warn(f"{what}: the flow's far tails overflow; check samples before using them",
                  FitWarning, stacklevel=4)
