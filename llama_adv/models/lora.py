"""LoRA adapters (Hu et al. 2022) on the attention and MLP kernels of either architecture.

A target kernel ``W`` (``[in..., out...]``, ours are ``x @ W``) trains as
``W + (alpha / rank) * A @ B`` with ``A`` ``[in, rank]`` and ``B`` ``[rank, out]``
(flattened over the kernel's input and output dimensions), ``B`` zero at the start so the
adapted model starts as the base model. The base weights are frozen: the train state holds
only the adapters (and, for classification, the task head, which the base model does not
have: PEFT's ``modules_to_save``); the optimizer state and every adversarial method see
only those. Perturbations stay on the embeddings (of the frozen table); gradients reach
the adapters only.

The adapters are merged into the kernels inside the jitted step (one ``[in, r] @ [r, out]``
product per kernel, small beside the forward pass), so the model modules know nothing of
LoRA, and a merged export is the same computation.

Defaults are PEFT's ``LoraConfig`` (peft 0.x): rank 8, alpha 8, targets q and v (its
LLaMA/T5 defaults), dropout 0; ``A`` drawn like PEFT's ``kaiming_uniform_(a=sqrt(5))``,
``U(-1/sqrt(in), 1/sqrt(in))``. PEFT's LoRA dropout acts on the adapter's input, which a
merged weight cannot express: only ``model.lora.dropout = 0`` is supported here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from llama_adv.errors import UserError

Params = Any
# model.lora.targets names -> our module names (one per projection of either model; T5's
# self- and cross-attention both have query, key, value and out).
TARGETS = {"q": "query", "k": "key", "v": "value", "o": "out", "gate": "gate", "up": "up",
           "down": "down"}  # fmt: skip
# Input dimensions of each kernel (the rest are output dimensions).
IN_DIMS = {"out": 2}  # [heads, head_dim, d_model]; others [d_model or d_ff, ...]
ADAPTERS = "lora"
# Top-level subtrees that stay trainable: task heads the base model lacks.
HEADS = ("classifier",)
BASE_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Lora:
    """LoRA settings (``model.lora``): ``rank``, ``alpha``, ``targets``, ``base_dtype``."""

    rank: int
    alpha: float
    targets: tuple[str, ...]
    base_dtype: str = "float32"

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @classmethod
    def from_config(cls, section: Mapping) -> Lora | None:
        """The ``model.lora`` section as a :class:`Lora`; None when ``rank`` is 0.

        Raises:
          UserError: a rank below 0, alpha <= 0, an unknown target, dropout != 0 or an
            unknown base dtype, naming the field.
        """
        rank = section["rank"]
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
            raise UserError(f"model.lora.rank={rank!r} is invalid: use 0 (off) or a rank >= 1.")
        if rank == 0:
            return None
        if not section["alpha"] > 0:
            raise UserError(f"model.lora.alpha={section['alpha']!r} is invalid: it must be > 0.")
        targets = tuple(section["targets"])
        unknown = [t for t in targets if t not in TARGETS]
        if unknown or not targets:
            raise UserError(
                f"model.lora.targets={targets!r} is invalid: use some of {', '.join(TARGETS)}."
            )
        if section["dropout"] != 0:
            raise UserError(
                f"model.lora.dropout={section['dropout']!r} is not supported: the adapters are "
                "merged into the kernels, and PEFT's LoRA dropout acts on the adapter input "
                "only; use 0 (the model's own model.dropout_rate still applies)."
            )
        if section["base_dtype"] not in BASE_DTYPES:
            raise UserError(
                f"model.lora.base_dtype={section['base_dtype']!r} is invalid: use one of "
                f"{', '.join(BASE_DTYPES)}."
            )
        return cls(rank, float(section["alpha"]), targets, section["base_dtype"])

    def _is_target(self, names: tuple[str, ...]) -> bool:
        modules = {TARGETS[t] for t in self.targets}
        return len(names) >= 2 and names[-1] == "kernel" and names[-2] in modules

    def init(self, key: jax.Array, params: Params) -> dict[str, Any]:
        """Fresh adapters for the target kernels of ``params``: a tree mirroring their
        paths, each ``{"a": [layers..., in, rank], "b": [layers..., rank, out]}``.

        Raises:
          UserError: no kernel of the model matches ``targets``.
        """
        flat = jax.tree_util.tree_flatten_with_path(params)[0]
        found = [(tuple(_name(p) for p in path), leaf) for path, leaf in flat]
        found = [(names, leaf) for names, leaf in found if self._is_target(names)]
        if not found:
            raise UserError(
                f"model.lora.targets={self.targets!r} match no kernel of this model; its "
                "projections are q, k, v, o (attention) and gate, up, down (MLP)."
            )
        adapters: dict[str, Any] = {}
        keys = jax.random.split(key, len(found))
        for k, (names, leaf) in zip(keys, found, strict=True):
            lead, d_in, d_out = _split_shape(names, leaf.shape)
            bound = 1.0 / math.sqrt(d_in)
            node = adapters
            for name in names[:-1]:
                node = node.setdefault(name, {})
            node["kernel"] = {
                "a": jax.random.uniform(k, (*lead, d_in, self.rank), jnp.float32, -bound, bound),
                "b": jnp.zeros((*lead, self.rank, d_out), jnp.float32),
            }
        return adapters

    def split(self, key: jax.Array, params: Params) -> tuple[Params, Params]:
        """``(trainable, frozen)`` of a full parameter tree: fresh adapters under
        ``"lora"`` and the task heads; the base weights (in ``base_dtype``)."""
        trainable = {name: params[name] for name in HEADS if name in params}
        trainable[ADAPTERS] = self.init(key, params)
        dtype = jnp.bfloat16 if self.base_dtype == "bfloat16" else jnp.float32
        frozen = {
            name: jax.tree.map(lambda x: x.astype(dtype), sub)
            for name, sub in params.items()
            if name not in HEADS
        }
        return trainable, frozen

    def combine(self, frozen: Params, trainable: Params) -> Params:
        """The model's full float32 parameters: ``frozen`` with every target kernel plus
        ``scale * A @ B`` and the trainable heads. Differentiable in ``trainable``."""
        full = jax.tree.map(lambda x: x.astype(jnp.float32), frozen)
        full = {**full, **{k: v for k, v in trainable.items() if k != ADAPTERS}}
        return _merge(full, trainable[ADAPTERS], self.scale, ())


def _name(entry: Any) -> str:
    return str(getattr(entry, "key", getattr(entry, "name", entry)))


def _split_shape(names: tuple[str, ...], shape: tuple[int, ...]) -> tuple[tuple, int, int]:
    """``(leading layer dims, in, out)`` of a kernel (scanned kernels lead with layers)."""
    lead = shape[:1] if "blocks" in names else ()
    core = shape[len(lead) :]
    n_in = IN_DIMS.get(names[-2], 1)
    return lead, math.prod(core[:n_in]), math.prod(core[n_in:])


def _merge(params: Params, adapters: Mapping, scale: float, path: tuple[str, ...]) -> Params:
    out = dict(params)
    for name, sub in adapters.items():
        if name == "kernel" and set(sub) == {"a", "b"}:
            kernel = params["kernel"]
            delta = jnp.einsum("...ir,...ro->...io", sub["a"], sub["b"]) * scale
            out["kernel"] = kernel + delta.reshape(kernel.shape).astype(kernel.dtype)
        else:
            out[name] = _merge(params[name], sub, scale, (*path, name))
    return out


def factors(adapters: Params) -> dict[tuple[str, ...], tuple[Any, Any]]:
    """``{kernel path: (A, B)}`` of an adapter tree (as :meth:`Lora.init` builds it), the
    path ending in ``"kernel"``; ``A`` ``[layers..., in, rank]``, ``B`` ``[layers..., rank,
    out]`` as stored."""
    pairs: dict[tuple[str, ...], dict[str, Any]] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(adapters)[0]:
        names = tuple(_name(p) for p in path)
        pairs.setdefault(names[:-1], {})[names[-1]] = leaf
    return {path: (ab["a"], ab["b"]) for path, ab in pairs.items()}
