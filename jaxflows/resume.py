"""Resumable fits: the training state :func:`jaxflows.fit` writes after every epoch,
and the run fingerprint that makes sure a resumed fit continues the same run.

The state (``TRAIN_STATE_FILE`` in ``checkpoint_dir``) holds the current params
and optimizer state, the best params, the history and the early-stopping
counters; it is written atomically by :mod:`jaxflows.checkpoint`. The
fingerprint is JSON data describing the run (key, flow config, batch size, data
hashes, optimizer, the caller's ``run_settings``); a resume whose fingerprint
differs is refused with a ``ValueError`` naming each difference.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import Any, Dict, NamedTuple

import jax
import numpy as np

from . import checkpoint as ckpt
from .early_stopping import EarlyStopping
from .sharding import host_tree
from .steps import DEFAULT_LEARNING_RATE, FitWarning
from .training_data import key_fingerprint

TRAIN_STATE_FILE = "train_state.ckpt"
HISTORY_LISTS = ("train_loss", "val_loss", "epoch_seconds", "skipped_steps")


class TrainState(NamedTuple):
    """Everything a fit carries from one epoch to the next (as saved and restored)."""

    params: Any
    opt_state: Any
    history: Dict[str, Any]
    stopping: EarlyStopping
    epoch: int  # epochs finished


def fresh_state(params, opt_state) -> TrainState:
    return TrainState(params, opt_state, {name: [] for name in HISTORY_LISTS},
                      EarlyStopping(params), 0)


def content_hash(arrays: Dict[str, Any]) -> Dict[str, Any]:
    """Shape, dtype and SHA-256 of each array (hashed in row chunks: bounded memory)."""
    out = {}
    for name, a in arrays.items():
        if a is None:
            continue
        h = hashlib.sha256()
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            from .distributed import global_digest  # each process hashes its own rows
            digest = global_digest(a)
        else:
            rows = max(1, (1 << 24) // max(1, int(np.prod(a.shape[1:])) * a.dtype.itemsize))
            for start in range(0, a.shape[0], rows):
                h.update(np.ascontiguousarray(np.asarray(a[start:start + rows])).data)
            digest = h.hexdigest()[:16]
        out[name] = {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": digest}
    return out


def optimizer_fingerprint(opt_state, default_optimizer: bool) -> Dict[str, Any]:
    """What identifies the optimizer: its state's structure and any hyperparameters
    kept in it (``optax.inject_hyperparams``); for fit's default Adam, its rate."""
    treedef = jax.tree_util.tree_structure(opt_state)
    hyper = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        name = jax.tree_util.keystr(path)
        if "hyperparams" in name and np.size(leaf) == 1:
            hyper[name] = float(np.asarray(leaf))
    out = {"state_structure": hashlib.sha256(str(treedef).encode()).hexdigest()[:16],
           "hyperparams": hyper}
    if default_optimizer:
        out = {"default_adam_learning_rate": DEFAULT_LEARNING_RATE, **out}
    return out


def run_fingerprint(*, run_settings, key, flow_config, dim, n_train, n_val, batch_size,
                    optimizer, arrays) -> Dict[str, Any]:
    """What identifies a run, as JSON data: a resumed fit must match it exactly."""
    fp = {"settings": run_settings or {}, "flow": flow_config, "key": key_fingerprint(key),
          "dim": int(dim), "n_train": int(n_train), "n_val": int(n_val),
          "batch_size": int(batch_size), "optimizer": optimizer, "data": content_hash(arrays)}
    return json.loads(json.dumps(fp))  # as it reads back from the file (lists, not tuples)


def _differences(old, new, prefix: str = "") -> list:
    out = []
    keys = list(new) + [k for k in old if k not in new]
    for k in keys:
        a, b = old.get(k, "absent"), new.get(k, "absent")
        name = f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            # the caller's settings read as given ("--layers"); the rest as paths
            out += _differences(a, b, "" if (prefix == "" and k == "settings") else name + ".")
        elif a != b:
            if name.startswith("data.") and name.endswith(".sha256"):  # same shape, other values
                name = name.split(".")[1] + " contents (SHA-256)"
            out.append(f"{name}: checkpoint {a}, now {b}")
    return out


def _optimizer_hint(saved: dict, now: dict) -> str:
    """Why a default-Adam difference arises, and what to do about it."""
    rate = saved.get("optimizer", {}).get("default_adam_learning_rate")
    now_rate = now.get("optimizer", {}).get("default_adam_learning_rate")
    if rate == now_rate:
        return ""
    if rate is None:
        return " (the checkpoint's run passed its own optimizer=: pass the same one)"
    if rate == DEFAULT_LEARNING_RATE:
        return (" (the checkpoint's run used fit's default optimizer, optax.adam(1e-3): resume "
                "without optimizer=)")
    return (f" (the checkpoint's run set fit's default Adam to learning_rate={rate}, an argument "
            "fit no longer takes: such a run cannot be resumed; start a new checkpoint_dir and "
            f"pass optimizer=optax.adam({rate}))")


def refuse_other_run(path: str, saved, now) -> None:
    """Raise ``ValueError`` naming each difference unless ``saved == now``."""
    if saved == now:
        return
    if not isinstance(saved, dict):
        raise ValueError(f"checkpoint '{path}' has no run fingerprint (written by an older "
                         "jaxflows?); use another checkpoint_dir")
    diffs = _differences(saved, now)
    raise ValueError(f"checkpoint '{path}' was written by a different run, not resuming it: "
                     + "; ".join(diffs) + _optimizer_hint(saved, now) + ". Resume with the same "
                     "settings and data, or write to another checkpoint_dir")


def restore(path: str, params, opt_state, fingerprint, num_epochs: int) -> TrainState:
    """The state saved in ``path`` if it exists (refusing another run's), else a fresh one.
    Warns (:class:`FitWarning`) when the saved fit has nothing left to train."""
    if not os.path.exists(path):
        return fresh_state(params, opt_state)
    st = ckpt.read_train_state(path, params, opt_state,
                               check=lambda s: refuse_other_run(path, s.get("fingerprint"),
                                                                fingerprint))
    stopping = EarlyStopping(st["best_params"], st["best_val"], st["best_epoch"],
                             st["since_best"], st["stopped_early"])
    state = TrainState(st["params"], st["opt_state"], st["history"], stopping, st["epoch"])
    if stopping.stopped or state.epoch >= num_epochs:
        how = (f"it stopped early at epoch {state.epoch} (patience)" if stopping.stopped else
               f"it ran {state.epoch} epochs and num_epochs is {num_epochs}; raise "
               "num_epochs to train longer")
        warnings.warn(f"checkpoint '{path}' holds a finished fit: {how}. Nothing is "
                      "left to train; returning its best params", FitWarning, stacklevel=5)
    return state


def save(path: str, flow, state: TrainState, fingerprint) -> None:
    """Atomically write ``state`` (from process 0 only: every process holds the same)."""
    if jax.process_index() != 0:
        return
    s = state.stopping
    ckpt.write_train_state(path, flow, {
        "params": host_tree(state.params), "opt_state": host_tree(state.opt_state),
        "best_params": host_tree(s.best_params), "history": state.history, "best_val": s.best_val,
        "best_epoch": s.best_epoch, "since_best": s.since_best, "epoch": state.epoch,
        "stopped_early": s.stopped, "fingerprint": fingerprint})
