"""The device mesh (axes ``data``, ``fsdp``, ``tensor``) and moving host batches onto it.

The batch is split over ``data`` and ``fsdp`` together (:data:`BATCH_AXES`); parameters,
optimizer and method state are split over ``fsdp`` and ``tensor`` by the logical axis rules
of :mod:`llama_adv.train.partitioning`. ``data`` alone is plain data parallelism (every
device holds all parameters); ``fsdp`` adds ZeRO-3-style parameter sharding, whose
all-gathers XLA inserts; ``tensor`` splits heads, MLP and vocabulary dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from llama_adv.errors import UserError

DATA_AXIS, FSDP_AXIS, TENSOR_AXIS = "data", "fsdp", "tensor"
MESH_AXES = (DATA_AXIS, FSDP_AXIS, TENSOR_AXIS)
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)  # the global batch is split over both


def mesh_shape(sizes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """The sizes of :data:`MESH_AXES` over ``num_devices`` devices; one size may be -1
    (the remaining devices).

    Raises:
      UserError: a size below 1 other than -1, more than one -1, or a product that is not
        ``num_devices``.
    """
    shape = [int(sizes.get(axis, 1)) for axis in MESH_AXES]
    for axis, size in zip(MESH_AXES, shape, strict=True):
        if size < 1 and size != -1:
            raise UserError(f"mesh.{axis}={size} is invalid: use a size >= 1, or -1 for the rest.")
    free = [i for i, size in enumerate(shape) if size == -1]
    if len(free) > 1:
        names = ", ".join(f"mesh.{MESH_AXES[i]}" for i in free)
        raise UserError(f"{names} are all -1; at most one mesh axis takes the remaining devices.")
    fixed = math.prod(size for size in shape if size != -1)
    if free:
        if num_devices % fixed:
            raise UserError(
                f"{_describe(shape)} leaves no whole size for mesh.{MESH_AXES[free[0]]}: "
                f"{num_devices} devices are not a multiple of {fixed}."
            )
        shape[free[0]] = num_devices // fixed
    if math.prod(shape) != num_devices:
        raise UserError(
            f"{_describe(shape)} needs {math.prod(shape)} devices but the run has {num_devices} "
            "(train.num_devices, 0 = all); make the product of the mesh sizes equal it, or "
            "set one of them to -1."
        )
    return tuple(shape)


def _describe(shape) -> str:
    sizes = zip(MESH_AXES, shape, strict=True)
    return "mesh " + " x ".join(f"{axis}={size}" for axis, size in sizes)


def make_mesh(num_devices: int = 0, sizes: Mapping[str, int] | None = None) -> Mesh:
    """A ``data x fsdp x tensor`` mesh over the first ``num_devices`` devices (0 = all
    devices of all processes); ``sizes`` (the ``mesh`` config section) default to all
    devices on ``data``."""
    devices = jax.devices()[: num_devices or None]
    shape = mesh_shape(sizes or {DATA_AXIS: -1}, len(devices))
    # Explicit shardings are given where they matter (parameters, batches); XLA
    # propagates the rest (Auto axes).
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)


def mesh_from_config(config) -> Mesh:
    """The run's mesh: ``train.num_devices`` devices shaped by the ``mesh`` section."""
    sizes = config.get("mesh") or {DATA_AXIS: -1}
    return make_mesh(config.train.num_devices, dict(sizes))


def batch_shards(mesh: Mesh) -> int:
    """How many pieces the global batch is cut into (the product of :data:`BATCH_AXES`)."""
    return math.prod(mesh.shape.get(axis, 1) for axis in BATCH_AXES)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the batch axes the mesh has."""
    axes = tuple(axis for axis in BATCH_AXES if axis in mesh.shape)
    return NamedSharding(mesh, PartitionSpec(axes))


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Turns this process's local batch into global arrays split over the batch axes."""
    sharding = batch_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def to_host(x: jax.Array) -> np.ndarray:
    """A global array as one numpy array on this host (all of it, from every process)."""
    if x.is_fully_addressable:
        return np.asarray(jax.device_get(x))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
