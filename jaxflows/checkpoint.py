"""Checkpoints: a flow's configuration, params and training state in one safe file.

``save(path, flow, params, ...)`` writes, ``load(path)`` reads back a
:class:`Checkpoint` whose ``flow`` is rebuilt from ``flow.config`` (factory
name and keyword arguments) with :func:`jaxflows.models.from_config`, so the
file alone rebuilds the model, no user code needed.

File layout (little-endian)::

    b"JAXFLOWS"            8 bytes   magic: identifies our files
    format version         uint32    FORMAT_VERSION of the writer
    payload length         uint64
    sha256(payload)        32 bytes
    payload                msgpack (flax.serialization) of a dict of arrays,
                           strings and ints

Loading never unpickles and never runs code: msgpack holds only data. A
file that is not ours, is shorter than its header says, fails its checksum
or comes from a newer format raises :class:`CheckpointError` naming the file
and the problem. Writes are atomic: the bytes go to a temporary file in the
same directory, are flushed to disk, and ``os.replace`` swaps it in, so an
interrupted save leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import warnings
from typing import Any, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
from flax import serialization

from .conditioners import ConditionerError
from .data import Standardizer
from .files import LOCK_FILE, DirectoryLocked, atomic_write, directory_lock  # noqa: F401 - re-exported
from .flows import Flow
from .models import from_config
from .state import split_state

MAGIC = b"JAXFLOWS"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIQ32s")  # magic, version, payload length, sha256
KINDS = ("model", "train_state")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read: truncated, corrupted, foreign or newer."""


class Checkpoint(NamedTuple):
    """What :func:`load` returns.

    - ``flow``: the rebuilt :class:`~jaxflows.Flow` (``None`` if the saved flow
      had no ``config``, e.g. a hand-built ``transformed`` flow).
    - ``params``: the params pytree (JAX arrays). For a training state written
      by ``fit(checkpoint_dir=...)`` these are the best params so far.
    - ``opt_state``: the optimizer state (restored into ``optimizer.init(params)``'s
      structure when ``load(..., optimizer=...)`` is given, else a nested dict), or ``None``.
    - ``step``: an int (optimizer steps, or epochs for a training state), or ``None``.
    - ``standardizer``: a :class:`~jaxflows.data.Standardizer` or ``None``.
    - ``metadata``: a JSON-like dict (metrics, history, anything saved with it).
    - ``config``: the flow's config dict (or ``None``).
    - ``kind``: ``"model"`` (written by :func:`save`) or ``"train_state"``
      (written by ``fit(checkpoint_dir=...)`` to resume a fit).
    """

    flow: Optional[Flow]
    params: Any
    opt_state: Any
    step: Optional[int]
    standardizer: Optional[Standardizer]
    metadata: Dict[str, Any]
    config: Optional[Dict[str, Any]]
    kind: str = "model"


# --------------------------------------------------------------------------
# Bytes on disk
# --------------------------------------------------------------------------

def _encode(record: Dict[str, Any]) -> bytes:
    payload = serialization.msgpack_serialize(record)
    return _HEADER.pack(MAGIC, FORMAT_VERSION, len(payload), hashlib.sha256(payload).digest()) + payload


def _decode(path: str) -> Tuple[Dict[str, Any], int]:
    """``(record, payload length)`` of a checkpoint file, every check done."""
    where = f"checkpoint '{path}'"
    if not os.path.exists(path):
        raise FileNotFoundError(f"{where} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"{where} is a directory, not a checkpoint file")
    # Bounded reading: the header first, then exactly the payload it announces once
    # the file's size agrees with it; a huge or endless file (/dev/zero, a video) is
    # never read whole.
    with open(path, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointError(f"{where} is not a regular file (a device, pipe or socket), "
                                  "so it is not a jaxflows checkpoint")
        head = f.read(_HEADER.size)
        if len(head) < len(MAGIC) or head[:len(MAGIC)] != MAGIC:
            raise CheckpointError(f"{where} is not a jaxflows checkpoint (no JAXFLOWS header); "
                                  "it may be another program's file")
        if len(head) < _HEADER.size:
            raise CheckpointError(f"{where} is truncated: {len(head)} bytes, shorter than the "
                                  f"{_HEADER.size}-byte header")
        _, version, length, digest = _HEADER.unpack(head)
        if version > FORMAT_VERSION:
            raise CheckpointError(f"{where} has format version {version}, newer than this jaxflows "
                                  f"reads (up to {FORMAT_VERSION}); upgrade jaxflows to load it")
        available = info.st_size - _HEADER.size
        if available < length:
            raise CheckpointError(f"{where} is truncated: {available} of {length} payload bytes; "
                                  "the save was interrupted or the copy is incomplete")
        if available > length:
            raise CheckpointError(f"{where} is corrupted: {available - length} unexpected bytes "
                                  "after the payload")
        payload = f.read(length)
    if len(payload) != length:
        raise CheckpointError(f"{where} changed while it was read ({len(payload)} of {length} "
                              "payload bytes); another program may be writing it")
    if hashlib.sha256(payload).digest() != digest:
        raise CheckpointError(f"{where} is corrupted: its checksum does not match its contents")
    try:
        record = serialization.msgpack_restore(payload)
    except (RecursionError, msgpack.StackError):
        raise CheckpointError(f"{where} is corrupted: its payload is nested deeper than any "
                              "checkpoint") from None
    except Exception as err:  # noqa: BLE001 - any decoder failure is a bad file
        raise CheckpointError(f"{where} is corrupted: cannot decode its payload ({err})") from None
    if not isinstance(record, dict) or record.get("kind") not in KINDS:
        kind = record.get("kind") if isinstance(record, dict) else None
        raise CheckpointError(f"{where} holds an unknown record kind {kind!r:.60}; it was written by "
                              "a newer or different program")
    return record, length


# --------------------------------------------------------------------------
# Pytrees <-> records
# --------------------------------------------------------------------------

def _to_numpy(tree):
    return jax.tree_util.tree_map(np.asarray, serialization.to_state_dict(tree))


def _restore(template, state, where: str, what: str):
    """``state`` (nested dicts of arrays) in ``template``'s structure, shapes checked."""
    try:
        tree = serialization.from_state_dict(template, state)
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{where}: its {what} do not match the flow it describes ({err})") from None
    t_leaves, t_def = jax.tree_util.tree_flatten(template)
    leaves, tree_def = jax.tree_util.tree_flatten(tree)
    if t_def != tree_def:
        raise CheckpointError(f"{where}: its {what} have structure {tree_def}, expected {t_def}")
    for i, (t, a) in enumerate(zip(t_leaves, leaves)):
        if tuple(np.shape(a)) != tuple(np.shape(t)):
            raise CheckpointError(f"{where}: {what} leaf {i} has shape {tuple(np.shape(a))}, "
                                  f"the flow expects {tuple(np.shape(t))}")
    return jax.tree_util.tree_map(jnp.asarray, tree)


def _params_template(flow: Flow):
    return jax.eval_shape(flow.init, jax.random.PRNGKey(0))


def _check_params_fit(flow: Flow, params) -> None:
    """``params`` has the structure and leaf shapes of ``flow.init``'s (else ``ValueError``)."""
    template = _params_template(flow)
    t_leaves, t_def = jax.tree_util.tree_flatten_with_path(template)
    try:
        leaves, tree_def = jax.tree_util.tree_flatten_with_path(params)
    except Exception as err:  # noqa: BLE001 - not a pytree at all
        raise ValueError(f"params is not a pytree of arrays ({err})") from None
    if tree_def != t_def:
        raise ValueError(f"params do not fit the flow: their structure is {tree_def}, the flow's "
                         f"init gives {t_def}; pass the params of this flow")
    for (path, t), (_, a) in zip(t_leaves, leaves):
        shape = tuple(np.shape(a))
        if shape != tuple(t.shape):
            name = jax.tree_util.keystr(path)
            hint = ""
            if len(shape) == len(t.shape) + 1 and shape[1:] == tuple(t.shape):
                hint = (f" (an extra leading axis of {shape[0]}: vmapped or ensemble params; "
                        "save each member on its own)")
            raise ValueError(f"params do not fit the flow: leaf params{name} has shape {shape}, "
                             f"the flow expects {tuple(t.shape)}{hint}")


def _json(obj) -> str:
    return json.dumps(obj, allow_nan=True, default=_json_default)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray, jax.Array)):
        return np.asarray(o).tolist()
    raise TypeError(f"metadata value of type {type(o).__name__} is not JSON-serialisable")


def _rebuild_flow(config, where: str, payload_bytes: int, conditioner=None) -> Optional[Flow]:
    if config is None:
        if conditioner is not None:
            raise CheckpointError(f"{where} stores no flow config; pass flow=..., not conditioner=...")
        return None
    try:
        # params are stored as raw arrays of at least 2 bytes per entry: a config that
        # describes more parameters than the file can hold is refused before building
        return from_config(config, max_params=max(payload_bytes // 2, 1), conditioner=conditioner)
    except ConditionerError as err:  # a user network missing or of another class: say only that
        raise CheckpointError(f"{where}: {err}") from None
    except (ValueError, TypeError, RecursionError) as err:
        shown = json.dumps(config)[:300] if not isinstance(err, RecursionError) else "(nested)"
        raise CheckpointError(f"{where}: cannot rebuild its flow from config {shown} ({err}); "
                              "it may be damaged or need a newer jaxflows") from None


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("jaxflows")
    except Exception:  # noqa: BLE001 - not installed: fine
        return "unknown"


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------

def save(path, flow: Flow, params, *, opt_state=None, step: Optional[int] = None,
         standardizer: Optional[Standardizer] = None,
         metadata: Optional[Dict[str, Any]] = None) -> str:
    """Write a checkpoint atomically and return its path.

    Args:
      path: file to write (its directory is created); an existing file is
        replaced only once the new one is complete on disk.
      flow: the flow; its ``config`` is stored so :func:`load` can rebuild it
        (a flow without ``config`` is stored as ``None``: pass the flow again).
      params: its params pytree.
      opt_state: optional optimizer state (any pytree of arrays), and
        ``step`` an optional int, to continue training.
      standardizer: optional :class:`~jaxflows.data.Standardizer` applied to the
        data before the flow (the command line stores its own here).
      metadata: optional JSON-serialisable dict (metrics, notes).

    Raises:
      TypeError: ``flow`` is not a :class:`~jaxflows.Flow`.
      ValueError: ``params`` do not fit ``flow`` (another flow's params, or
        vmapped/ensemble params with an extra leading axis); nothing is written.

    A flow without a ``config`` (built with ``transformed``, or with a distrax
    or hand-made base) is saved with a ``UserWarning``: :func:`load` cannot
    rebuild it and needs ``load(path, flow=...)``.
    """
    path = os.fspath(path)
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be a jaxflows Flow, got {type(flow).__name__}")
    _check_params_fit(flow, params)
    if flow.config is None:
        warnings.warn(
            f"saving '{path}' without a flow config: this flow was built with transformed() or "
            "with a base that has no config (distrax or hand-made), so load() cannot rebuild it; "
            "load it with load(path, flow=the_same_flow)", UserWarning, stacklevel=2)
    record: Dict[str, Any] = {
        "kind": "model", "jaxflows_version": _version(), "config": _json(flow.config),
        "params": _to_numpy(params), "metadata": _json(metadata or {}),
    }
    if opt_state is not None:
        record["opt_state"] = _to_numpy(opt_state)
    if step is not None:
        record["step"] = int(step)
    if standardizer is not None:
        record["standardizer"] = {"mean": np.asarray(standardizer.mean),
                                  "scale": np.asarray(standardizer.scale)}
    atomic_write(path, _encode(record))
    return path


def load(path, *, optimizer=None, flow: Optional[Flow] = None, conditioner=None) -> Checkpoint:
    """Read a checkpoint written by :func:`save` (or by ``fit(checkpoint_dir=...)``).

    Args:
      path: the file.
      optimizer: if given, the optimizer state is restored into
        ``optimizer.init(trainable params)``'s structure (optax NamedTuples and all).
      flow: the flow to restore into when the file stores none (a flow without
        ``config``); otherwise the flow is rebuilt from the file.
      conditioner: the network a flow was built with, when it was your own
        (``maf(..., conditioner=net)``): a file holds its params, not its code.
        Pass the same network (e.g. the same ``flax.linen`` module); the
        error says which one the file needs.

    Raises:
      FileNotFoundError: no such file.
      CheckpointError (a ``ValueError``): not a jaxflows checkpoint, truncated,
        corrupted, newer format, or params that do not fit the flow; the
        message names the file.
    """
    path = os.fspath(path)
    where = f"checkpoint '{path}'"
    record, payload_bytes = _decode(path)
    try:
        config = json.loads(record["config"])
        metadata = json.loads(record.get("metadata", "{}"))
        params_state = record["params"] if record["kind"] == "model" else record["best_params"]
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{where} is missing or has a bad field ({err!r:.200})") from None
    except RecursionError:
        raise CheckpointError(f"{where} is corrupted: its config or metadata is nested deeper "
                              "than any checkpoint") from None
    rebuilt = _rebuild_flow(config, where, payload_bytes, conditioner)
    flow = rebuilt if rebuilt is not None else flow
    if flow is not None:
        params = _restore(_params_template(flow), params_state, where, "params")
    else:
        params = jax.tree_util.tree_map(jnp.asarray, params_state)
    opt_state = None
    if record["kind"] == "model" and "opt_state" in record:
        opt_state = record["opt_state"]
        if optimizer is not None:
            opt_state = _restore(optimizer.init(split_state(params)[0]), opt_state, where, "optimizer state")
    step = record.get("step")
    if record["kind"] == "train_state":
        metadata = dict(metadata)
        step = metadata.get("epoch")
    std = record.get("standardizer")
    standardizer = None
    if std is not None:
        standardizer = Standardizer(mean=np.asarray(std["mean"], np.float64),
                                    scale=np.asarray(std["scale"], np.float64))
    return Checkpoint(flow, params, opt_state, None if step is None else int(step),
                      standardizer, metadata, config, record["kind"])


# --------------------------------------------------------------------------
# fit's training state (used by jaxflows.train)
# --------------------------------------------------------------------------

_TREES = ("params", "opt_state", "best_params")


def write_train_state(path: str, flow: Flow, state: Dict[str, Any]) -> None:
    """Atomically write ``fit``'s state: current params and optimizer state,
    best params, and the loop's bookkeeping (history, epoch, patience)."""
    record = {"kind": "train_state", "jaxflows_version": _version(),
              "config": _json(flow.config),
              "metadata": _json({k: v for k, v in state.items() if k not in _TREES})}
    for name in _TREES:
        record[name] = _to_numpy(state[name])
    atomic_write(path, _encode(record))


def read_train_state(path: str, params_like, opt_state_like, check=None) -> Dict[str, Any]:
    """Read :func:`write_train_state`'s file into the given structures.

    ``check(state)``, if given, sees the bookkeeping (fingerprint, epoch, ...)
    before any array is restored, so it can refuse another run's state with a
    message that says what differs rather than which array shape does not fit."""
    where = f"checkpoint '{path}'"
    record, _ = _decode(path)
    if record["kind"] != "train_state":
        raise CheckpointError(f"{where} is a model checkpoint, not a training state written by fit")
    try:
        state = json.loads(record["metadata"])
    except (KeyError, TypeError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{where} is missing or has a bad field ({err!r:.200})") from None
    if check is not None:
        check(state)
    try:
        state["params"] = _restore(params_like, record["params"], where, "params")
        state["best_params"] = _restore(params_like, record["best_params"], where, "params")
        state["opt_state"] = _restore(opt_state_like, record["opt_state"], where, "optimizer state")
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{where} is missing or has a bad field ({err!r})") from None
    return state
