"""Training over several processes (hosts) with JAX's multi-process runtime.

JAX runs one Python process per host (or group of accelerators), each driving its
local devices; a :class:`jax.sharding.Mesh` over ``jax.devices()`` spans them all.
:func:`jaxflows.fit` with ``mesh=`` splits every batch over the mesh's ``"data"``
axis and XLA all-reduces the gradients across processes, so every process takes
the same steps and ends with the same params. Start the runtime with
:func:`initialize` (or :func:`jax.distributed.initialize`) before any other JAX
call; ``jaxflows fit --coordinator HOST:PORT --num-processes N --process-id I`` does.

Two ways to give the processes their data:

* **The same data everywhere**: every process passes the whole training set
  (NumPy) and the same ``key``; each process copies to its devices only the
  rows of each batch that its devices hold. The result equals a single-process
  fit on a mesh with as many devices, to float rounding (the gradient's
  summation order differs).
* **Each process its own rows**, for data that do not fit in one host's memory:
  :func:`process_local_rows` (or :func:`process_local_split`, which also holds
  out validation rows) turns every process's own rows into one global
  ``jax.Array`` split over the mesh (:func:`jax.make_array_from_process_local_data`):
  process ``p``'s rows stay on the devices it drives, and no process ever holds
  the whole data set. :func:`jaxflows.fit` takes such arrays as ``data`` /
  ``val_data`` / ``context``: its shuffle is a permutation of the global row
  order, drawn from ``key`` on every host alike, and each batch is gathered
  from wherever its rows live, on the devices. The batches are therefore
  exactly those of a single-process fit on the concatenated rows, and so is
  the result (to float rounding). Every process passes the same number of
  rows, a multiple of the mesh devices it drives.

Checkpoints (``fit(..., checkpoint_dir=...)``) are written by process 0 only,
atomically; ``checkpoint_dir`` must be one directory on a filesystem that every
process sees. Process 0 alone takes the directory's lock (every process fails
if it cannot); on resume every process reads the training state and they check
that they all read the same epoch; a fit returns on every process only once
process 0 has written its last state.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from typing import Any, List, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["initialize", "local_split_indices", "process_allgather_json", "process_local_rows",
           "process_local_split", "Rows"]

DATA_AXIS = "data"


def initialize(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
    """Start JAX's multi-process runtime (before any other JAX work; a second call
    in a process that already joined with the same settings does nothing).

    Args:
      coordinator: ``"HOST:PORT"`` of process 0's coordination service (the
        same string on every process). ``None`` reads ``JAX_COORDINATOR_ADDRESS``
        or lets JAX detect a managed cluster (SLURM, Open MPI, Kubernetes,
        Cloud TPU).
      num_processes, process_id: the number of processes and this process's
        id (``0 ... num_processes - 1``); ``None`` reads ``JAX_NUM_PROCESSES``
        / ``JAX_PROCESS_ID`` if set, else lets JAX detect them from the cluster.

    On the CPU backend the cross-process collectives use gloo
    (``jax_cpu_collectives_implementation="gloo"``); GPU and TPU backends
    bring their own.
    """
    if coordinator is None:
        coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = _env_int("JAX_NUM_PROCESSES", num_processes, "num_processes")
    process_id = _env_int("JAX_PROCESS_ID", process_id, "process_id")
    if coordinator is not None:
        host, sep, port = str(coordinator).rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"coordinator must be 'HOST:PORT' (e.g. '10.0.0.1:1234'), "
                             f"got {coordinator!r}")
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be a positive integer, got {num_processes}")
    if process_id is not None:
        if process_id < 0 or (num_processes is not None and process_id >= num_processes):
            top = "num_processes - 1" if num_processes is None else str(num_processes - 1)
            raise ValueError(f"process_id must be in 0 ... {top}, got {process_id}")
    if jax.distributed.is_initialized():  # already joined (a second fit in this process)
        now = (jax.process_count(), jax.process_index())
        if (num_processes not in (None, now[0])) or (process_id not in (None, now[1])):
            raise ValueError(f"this process already runs as process {now[1]} of {now[0]}; it "
                             f"cannot rejoin as process {process_id} of {num_processes}")
        return
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # noqa: BLE001 - an option this jax does not know: its own default
        pass
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def _env_int(var: str, value: Optional[int], name: str) -> Optional[int]:
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {value!r}")
        return int(value)
    text = os.environ.get(var, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {var} must be an integer, got {text!r}") from None


def process_allgather_json(obj) -> List[Any]:
    """Every process's ``obj`` (JSON data), in process order; ``[obj]`` with one process.

    A collective: every process must call it, in the same order as the other
    collectives.
    """
    if jax.process_count() == 1:
        return [json.loads(json.dumps(obj))]
    from jax.experimental import multihost_utils
    blob = np.frombuffer(json.dumps(obj, sort_keys=True).encode(), np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.array([blob.size], np.int32)))
    lengths = lengths.reshape(-1)
    # padded to a power of two: few distinct shapes, so few compiles of the gather
    buf = np.zeros(1 << max(6, int(lengths.max() - 1).bit_length()), np.uint8)
    buf[:blob.size] = blob
    blobs = np.asarray(multihost_utils.process_allgather(buf))
    return [json.loads(bytes(blobs[i, :int(lengths[i])]).decode()) for i in range(len(lengths))]


class Rows(NamedTuple):
    """Global training and validation arrays made by :func:`process_local_split`."""

    train: jax.Array
    val: jax.Array
    train_context: Optional[jax.Array] = None
    val_context: Optional[jax.Array] = None


def _data_sharding(mesh):
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(f"mesh must have an axis named {DATA_AXIS!r}, got axes {mesh.axis_names}; "
                         "build it with jax.make_mesh((jax.device_count(),), ('data',))")
    if mesh.devices.size != int(mesh.shape[DATA_AXIS]):
        raise ValueError(f"process-local rows need a mesh whose only axis of size > 1 is "
                         f"{DATA_AXIS!r}; got axes {dict(mesh.shape)}")
    auto = jax.sharding.Mesh(mesh.devices, mesh.axis_names)  # Auto axes, as fit uses
    return jax.sharding.NamedSharding(auto, jax.sharding.PartitionSpec(DATA_AXIS))


def _local_devices(mesh) -> int:
    return sum(d.process_index == jax.process_index() for d in mesh.devices.flat)


def process_local_rows(rows, mesh, name: str = "rows") -> jax.Array:
    """One global ``(N, ...)`` array, split over ``mesh``'s ``"data"`` axis, from
    every process's own ``rows`` (a collective: every process calls it).

    Process ``p``'s rows land on the devices it drives, so no process ever
    holds the whole array; with a mesh ordered by process (as
    ``jax.make_mesh`` builds it on CPU and GPU hosts) the global array is the
    concatenation of the processes' rows in process order. Every process must
    pass the same number of rows, a multiple of the number of mesh devices it
    drives, with the same trailing shape and dtype (``ValueError`` naming what
    differs otherwise). With one process this is ``jax.device_put`` onto the mesh.
    """
    sharding = _data_sharding(mesh)
    if isinstance(rows, jax.Array) and not rows.is_fully_addressable:
        raise TypeError(f"{name} must be this process's own rows (NumPy or a local JAX array), "
                        "got an array that already spans several processes")
    rows = np.asarray(rows)
    if rows.ndim < 1 or rows.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row, got shape {rows.shape}")
    local = _local_devices(mesh)
    views = process_allgather_json({"shape": list(rows.shape), "dtype": str(rows.dtype),
                                    "devices": local})
    shapes = [tuple(v["shape"]) for v in views]
    dtypes = [v["dtype"] for v in views]
    devices = [v["devices"] for v in views]
    if len(set(shapes)) != 1 or len(set(dtypes)) != 1:
        raise ValueError(f"every process must pass {name} of the same shape and dtype; the "
                         f"processes pass shapes {shapes} and dtypes {dtypes} (give each the same "
                         "number of rows, e.g. by dropping a few)")
    if len(set(devices)) != 1 or devices[0] == 0:
        raise ValueError(f"every process must drive the same number of the mesh's devices; they "
                         f"drive {devices}")
    if rows.shape[0] % local:
        raise ValueError(f"{name} has {rows.shape[0]} rows on this process; it must be a "
                         f"multiple of the {local} mesh devices this process drives")
    return jax.make_array_from_process_local_data(
        sharding, rows, (rows.shape[0] * len(views),) + rows.shape[1:])


def _key_ints(key) -> list:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return [int(v) for v in np.asarray(key).ravel()]


def local_split_indices(n: int, val_fraction: float, key, process_index: int,
                        multiple: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)`` (sorted) of process ``process_index``'s ``n`` rows.

    ``round(n * val_fraction)`` rows, rounded to a multiple of ``multiple`` (at
    least ``multiple``, leaving at least ``multiple`` for training), are held
    out, chosen by a permutation drawn on the host from ``key`` and
    ``process_index``: a deterministic function of both.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if n < 2 * multiple:
        raise ValueError(f"{n} rows cannot be split into training and validation rows that "
                         f"are each a multiple of {multiple} (the mesh devices of a process)")
    n_val = int(round(n * float(val_fraction) / multiple)) * multiple
    n_val = min(max(multiple, n_val), (n // multiple - 1) * multiple)
    perm = np.random.default_rng(_key_ints(key) + [_SPLIT_SALT, int(process_index)]).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


_SPLIT_SALT = 0x5117


def process_local_split(rows, mesh, *, key, val_fraction: float = 0.1, context=None) -> Rows:
    """Split each process's own ``rows`` into training and validation rows and
    make global arrays of both (:func:`process_local_rows`); a collective.

    Every process holds out the same number of its rows (``val_fraction`` of
    them, rounded to a multiple of the mesh devices it drives), chosen by
    :func:`local_split_indices` from ``key`` and the process index. Pass the
    result to :func:`jaxflows.fit`::

        r = process_local_split(my_rows, mesh, key=k_split)
        params, history = jaxflows.fit(flow, params, r.train, val_data=r.val, mesh=mesh, key=k_fit)

    ``context`` (this process's context rows, same number of rows) is split
    alike into ``r.train_context`` and ``r.val_context``.
    """
    rows = np.asarray(rows)
    if rows.ndim != 2:
        raise ValueError(f"rows must have shape (n, dim), got shape {rows.shape}")
    if context is not None:
        context = np.asarray(context)
        if context.ndim != 2 or context.shape[0] != rows.shape[0]:
            raise ValueError(f"context must have shape ({rows.shape[0]}, context_dim) like rows, "
                             f"got shape {context.shape}")
    tr, va = local_split_indices(rows.shape[0], val_fraction, key, jax.process_index(),
                                 _local_devices(mesh) or 1)
    g = lambda a, i, name: None if a is None else process_local_rows(a[i], mesh, name)  # noqa: E731
    return Rows(g(rows, tr, "training rows"), g(rows, va, "validation rows"),
                g(context, tr, "training context"), g(context, va, "validation context"))


def global_digest(a: jax.Array) -> str:
    """SHA-256 (16 hex digits) of an array spread over several processes (a collective).

    Each process hashes the blocks its devices hold (each block once), the
    digests are gathered and hashed in process order: the same string on every
    process, without any process reading the whole array. It identifies the
    contents *and* the layout (the number of processes), as a resumed fit needs.
    """
    h = hashlib.sha256(f"{a.shape}{a.dtype}".encode())
    seen = set()
    for shard in sorted(a.addressable_shards,
                        key=lambda s: tuple((i.start or 0) for i in s.index)):
        where = tuple((i.start, i.stop) for i in shard.index)
        if where in seen:
            continue
        seen.add(where)
        h.update(repr(where).encode())
        h.update(np.ascontiguousarray(np.asarray(shard.data)).data)
    views = process_allgather_json(h.hexdigest())
    return hashlib.sha256("".join(views).encode()).hexdigest()[:16]


def nonfinite_rows(a: jax.Array) -> np.ndarray:
    """Indices of the rows of a (possibly multi-process) array with a NaN or Inf."""
    rep = jax.sharding.NamedSharding(a.sharding.mesh, jax.sharding.PartitionSpec())
    ok = jax.jit(lambda v: jnp.isfinite(v).reshape(v.shape[0], -1).all(axis=1),
                 out_shardings=rep)(a)
    return np.flatnonzero(~np.asarray(ok.addressable_data(0)))


def take_rows(a: jax.Array, idx, local: bool = False):
    """Rows ``idx`` of an array spread over several processes, gathered on the
    devices (the same ``idx`` on every process; a collective). The result is
    split over the same mesh's ``"data"`` axis when its length allows, else
    replicated; ``local=True``: a NumPy copy on every process instead."""
    idx, mesh, out = np.asarray(idx), getattr(a.sharding, "mesh", None), None
    split = mesh is not None and DATA_AXIS in mesh.axis_names
    if local or (split and idx.shape[0] % int(mesh.shape[DATA_AXIS]) == 0):
        spec = jax.sharding.PartitionSpec(*(() if local else (DATA_AXIS,)))
        out = jax.sharding.NamedSharding(mesh, spec)
    rows = _take_fn(out)(a, idx)
    return np.asarray(rows.addressable_data(0)) if local else rows


@functools.lru_cache(maxsize=8)
def _take_fn(out_shardings):
    kw = {} if out_shardings is None else {"out_shardings": out_shardings}
    return jax.jit(lambda a, i: a[i], **kw)


def lock_directory(stack: contextlib.ExitStack, directory: str, what: str) -> None:
    """Take ``directory``'s lock (:func:`jaxflows.checkpoint.directory_lock`) in
    process 0 only, and have every process fail if it could not be taken."""
    from .files import DirectoryLocked, directory_lock
    if jax.process_count() == 1:
        stack.enter_context(directory_lock(directory, what))
        return

    def written(exc_type, exc, tb):
        # a fit that ends normally returns on every process only once process 0 has
        # written its last state, so any process may read it right after
        if exc_type is None:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"jaxflows: {directory} written")
        return False

    stack.push(written)
    err = None
    if jax.process_index() == 0:
        try:
            stack.enter_context(directory_lock(directory, what))
        except OSError as e:
            err = e
    flags = process_allgather_json(err is None)
    if err is not None:
        raise err
    if not flags[0]:
        raise DirectoryLocked(f"process 0 could not lock '{directory}' (in use by {what}); see "
                              "its error")


def agree_on_resume(state_path: str, epoch: Optional[int], error: Optional[BaseException]) -> None:
    """After each process has read (or tried to read) the training state: every
    process must have read the same epoch. ``epoch`` is ``0`` for a fresh start,
    ``error`` what reading raised (re-raised here, after the others learn of it)."""
    if jax.process_count() == 1:
        if error is not None:
            raise error
        return
    views = process_allgather_json({"ok": error is None, "epoch": epoch})
    if error is not None:
        raise error
    bad = [i for i, v in enumerate(views) if not v["ok"]]
    if bad:
        raise ValueError(f"process(es) {bad} could not resume from '{state_path}'; see their "
                         "error")
    epochs = [v["epoch"] for v in views]
    if len(set(epochs)) != 1:
        raise ValueError(f"the processes read different training states from '{state_path}' "
                         f"(epochs {epochs}): checkpoint_dir must be one directory on a "
                         "filesystem that every process sees")

# ---- the command line: jaxflows fit --coordinator HOST:PORT --num-processes N --process-id I

_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def cli_wants_processes(args) -> bool:
    """Whether ``jaxflows fit`` was asked to join a multi-process run: one of
    ``--coordinator``/``--num-processes``/``--process-id``/``--distributed``, or
    one of the environment variables ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``."""
    given = (getattr(args, "coordinator", None), getattr(args, "num_processes", None),
             getattr(args, "process_id", None))
    return (any(v is not None for v in given) or bool(getattr(args, "distributed", False))
            or any(os.environ.get(v, "").strip() for v in _ENV))


def data_mesh() -> Optional[jax.sharding.Mesh]:
    """A mesh over every process's devices with one ``"data"`` axis; ``None``
    with a single process (the command line then trains on one device)."""
    if jax.process_count() == 1:
        return None
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,))


def cli_fit_other_process(args, cmd_fit) -> int:
    """``jaxflows fit`` on a process other than 0: the same fit, in step with
    process 0, which alone prints and writes OUT; this process reads and
    resumes OUT/train_state like process 0, and writes nothing."""
    import argparse
    import tempfile
    quiet = argparse.Namespace(**vars(args))
    quiet.state_dir = os.path.join(args.out, "train_state")
    quiet.no_plot, quiet.no_progress = True, True
    with tempfile.TemporaryDirectory(prefix="jaxflows-process-") as scratch, \
            open(os.devnull, "w") as devnull:
        quiet.out = scratch
        return cmd_fit(quiet, devnull)
