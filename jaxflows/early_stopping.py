"""Early stopping on the validation loss, as a small state and a pure update.

After each epoch :func:`jaxflows.fit` calls ``state = update(state, epoch, params,
val_loss, patience)``: an epoch whose validation loss is lower than every earlier
one becomes the best (its params are kept); otherwise the count of epochs since
the best grows, and the fit stops once it reaches ``patience``. Without
validation data (``val_loss=None``) the latest epoch is always the best and the
fit never stops early.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional


class EarlyStopping(NamedTuple):
    """Where early stopping stands after an epoch."""

    best_params: Any          # the best epoch's params (the initial params before any epoch)
    best_val: float = math.inf  # the best validation loss so far
    best_epoch: int = -1      # 0-based; -1 before the first epoch
    since_best: int = 0       # epochs since the best one
    stopped: bool = False     # patience ran out: no further epoch runs


def update(state: EarlyStopping, epoch: int, params, val_loss: Optional[float],
           patience: Optional[int]) -> EarlyStopping:
    """The state after ``epoch`` ended with ``params`` and ``val_loss`` (``None``: no
    validation data). ``patience=None`` never stops. Pure: ``state`` is not modified."""
    if val_loss is None:
        return state._replace(best_params=params, best_epoch=epoch)
    if val_loss < state.best_val:
        state = EarlyStopping(params, float(val_loss), epoch, 0, False)
    else:
        state = state._replace(since_best=state.since_best + 1)
    return state._replace(stopped=patience is not None and state.since_best >= patience)
