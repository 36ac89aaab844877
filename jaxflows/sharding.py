"""Where training data and state live: one device, or a data-parallel mesh.

:func:`jaxflows.fit` takes an optional :class:`jax.sharding.Mesh` with an axis
named ``"data"``. Each batch is then split along its rows over that axis and the
params and optimizer state are replicated; the compiler inserts the all-reduce of
the gradients. Without a mesh everything lives on the default device.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

DATA_AXIS = "data"


def auto_mesh(mesh) -> Optional[jax.sharding.Mesh]:
    """``mesh`` with every axis of type ``Auto`` (``None`` stays ``None``).

    ``jax.make_mesh`` makes ``Explicit`` axes by default (sharding in the
    types), which ``lax.scan`` carries inside the flows reject; the compiler
    partitions the step just as well with ``Auto`` axes and the same devices.
    """
    if mesh is None:
        return None
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if DATA_AXIS not in mesh.axis_names:
        raise ValueError(f"mesh must have an axis named {DATA_AXIS!r}, got axes {mesh.axis_names}; "
                         "build it with jax.make_mesh((jax.device_count(),), ('data',))")
    return jax.sharding.Mesh(mesh.devices, mesh.axis_names)


def mesh_size(mesh) -> int:
    """How many devices share a batch: the size of the mesh's ``"data"`` axis (1 without a mesh)."""
    return 1 if mesh is None else int(mesh.shape[DATA_AXIS])


def placer(mesh):
    """``place(batch)``: put a host or device batch on the device(s) (``None`` stays ``None``).

    With a mesh the leading axis is split over the mesh's ``"data"`` axis.
    ``jax.make_array_from_callback`` asks only for the slices this process's
    devices hold, so under multi-host training each process copies only its
    own rows (every process must pass the same data and key).
    """
    if mesh is None:
        return lambda b: None if b is None else jnp.asarray(b)
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DATA_AXIS))

    def place(b):
        if b is None:
            return None
        if isinstance(b, jax.Array):
            return jax.device_put(b, sharding)
        return jax.make_array_from_callback(b.shape, sharding, lambda index: b[index])

    return place


def replicated(mesh):
    """The sharding that keeps a full copy on every device of ``mesh`` (``None`` without one)."""
    if mesh is None:
        return None
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def replicate(tree, mesh):
    """``tree`` copied to every device of ``mesh`` (unchanged without a mesh)."""
    return tree if mesh is None else jax.device_put(tree, replicated(mesh))


def host_tree(tree):
    """Fetch a (possibly replicated, possibly multi-host) pytree to NumPy."""
    def get(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(a.addressable_data(0))
        return np.asarray(a)
    return jax.tree_util.tree_map(get, tree)
