"""Logical axes of the parameters and their placement on the mesh.

Each parameter leaf gets one logical name per dimension (``embed``, ``vocab``, ``heads``,
``kv_heads``, ``head_dim``, ``mlp``, ``layers``, ...) from its module and leaf name, the
same for the decoder-only and the encoder-decoder model (they share the attention and MLP
layers of ``models/layers.py``, which define their kernels' axes in ``LAYER_AXES``). The
rules map logical names to mesh axes, as Flax's logical partitioning and MaxText do:
``embed`` over ``fsdp`` (FSDP: every weight matrix is split along d_model), heads, MLP
width and vocabulary over ``tensor`` (Megatron-style tensor parallelism). A dimension that
the mesh axis does not divide stays whole. The optimizer state and the method state
(SMART's teacher, ...) take the sharding of the parameter they mirror, found by path;
everything else is replicated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from llama_adv.models.layers import LAYER_AXES
from llama_adv.train.mesh import FSDP_AXIS, TENSOR_AXIS

# logical axis -> mesh axis (None: never split)
RULES: dict[str, str | None] = {
    "embed": FSDP_AXIS,
    "vocab": TENSOR_AXIS,
    "heads": TENSOR_AXIS,
    "kv_heads": TENSOR_AXIS,
    "mlp": TENSOR_AXIS,
    "head_dim": None,
    "layers": None,
    "norm": None,
    "classes": None,
    "buckets": None,
    "rank": None,
}

# (module name, leaf name) -> logical axes of the unstacked leaf: the shared attention and
# MLP layers' table (models/layers.py), then the embeddings and heads.
_BY_MODULE: dict[tuple[str, str], tuple[str, ...]] = {
    **LAYER_AXES,
    ("embedding", "embedding"): ("vocab", "embed"),
    ("shared", "embedding"): ("vocab", "embed"),
    ("relative_bias", "embedding"): ("buckets", "heads"),
    ("lm_head", "kernel"): ("embed", "vocab"),
    ("classifier", "kernel"): ("embed", "classes"),
    ("classifier", "bias"): ("classes",),
}


def _key_name(entry: Any) -> str:
    return str(getattr(entry, "key", getattr(entry, "name", entry)))


def logical_axes(path: tuple, ndim: int) -> tuple[str | None, ...]:
    """The logical axis names of the parameter leaf at ``path`` (a key path) with
    ``ndim`` dimensions; ``None`` for dimensions no rule names."""
    names = [_key_name(p) for p in path]
    stacked = "blocks" in names  # nn.scan: a leading layer axis
    leaf = names[-1] if names else ""
    module = names[-2] if len(names) > 1 else ""
    axes: tuple[str | None, ...]
    if leaf == "scale":
        axes = ("norm",)
    else:
        axes = _BY_MODULE.get((module, leaf), ())
    if stacked:
        axes = ("layers", *axes)
    if len(axes) != ndim:  # a leaf no rule describes: replicated
        return (None,) * ndim
    return axes


def spec_of(axes: tuple[str | None, ...], shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """The :class:`PartitionSpec` of a leaf with logical ``axes`` on ``mesh``; a mesh axis
    that does not divide its dimension (or is already used) leaves it whole."""
    used: set[str] = set()
    spec = []
    for name, size in zip(axes, shape, strict=True):
        axis = RULES.get(name) if name else None
        if axis is None or axis not in mesh.shape or axis in used or size % mesh.shape[axis]:
            spec.append(None)
            continue
        used.add(axis)
        spec.append(axis if mesh.shape[axis] > 1 else None)
    return PartitionSpec(*spec)


def param_shardings(params: Any, mesh: Mesh) -> Any:
    """A tree of :class:`NamedSharding` like ``params`` (arrays or shape structs)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: NamedSharding(
            mesh, spec_of(logical_axes(path, len(x.shape)), tuple(x.shape), mesh)
        ),
        params,
    )


def _path_key(path: tuple) -> tuple[str, ...]:
    return tuple(_key_name(p) for p in path)


def mirrored_shardings(tree: Any, params: Any, shardings: Any, mesh: Mesh) -> Any:
    """Shardings for ``tree`` (optimizer or method state): a leaf whose key path ends with
    a parameter's path and has its shape takes that parameter's sharding (Adam's moments,
    SMART's teacher); every other leaf is replicated."""
    by_path: Mapping[tuple[str, ...], tuple[tuple[int, ...], NamedSharding]] = {}
    flat_params = jax.tree_util.tree_flatten_with_path(params)[0]
    flat_shardings = jax.tree.leaves(shardings, is_leaf=lambda s: isinstance(s, NamedSharding))
    for (path, leaf), sharding in zip(flat_params, flat_shardings, strict=True):
        by_path[_path_key(path)] = (tuple(leaf.shape), sharding)
    depth = max((len(k) for k in by_path), default=0)
    replicated = NamedSharding(mesh, PartitionSpec())

    def pick(path, leaf):
        key, shape = _path_key(path), tuple(getattr(leaf, "shape", ()))
        for start in range(max(len(key) - depth, 0), len(key)):
            hit = by_path.get(key[start:])
            if hit is not None and hit[0] == shape:
                return hit[1]
        return replicated

    return jax.tree_util.tree_map_with_path(pick, tree)
