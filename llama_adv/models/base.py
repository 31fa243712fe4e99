"""The model interface every architecture implements (ARCHITECTURE.md, "The contract").

A model exposes its forward pass in two halves so that adversaries can perturb token
embeddings: ``embed`` gives one array per perturbable stream, ``apply_embedded`` runs the
rest of the network on (possibly perturbed) embeddings.
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import jax.numpy as jnp

Params = Any
Batch = dict[str, jax.Array]
Embedded = dict[str, jax.Array]

PAD_ID = 0  # token id 0 is padding in every tokenizer of the project


class Model(abc.ABC):
    """One interface for decoder-only and encoder-decoder models.

    Batches are dicts of arrays. Token inputs are ``"inputs"`` ``[B, T]`` (decoder-only), or
    ``"encoder_inputs"`` ``[B, S]`` and ``"decoder_inputs"`` ``[B, T]``; padding is
    ``PAD_ID`` and always on the right.
    """

    #: names of the perturbable embedding streams, e.g. ("inputs",)
    streams: tuple[str, ...]

    @abc.abstractmethod
    def init(self, rng: jax.Array, batch: Batch) -> Params:
        """Returns freshly initialised float32 parameters for batches shaped like ``batch``."""

    @abc.abstractmethod
    def embed(self, params: Params, batch: Batch) -> Embedded:
        """Returns ``{stream: [B, L, d_model]}``, the embeddings the first layer receives."""

    @abc.abstractmethod
    def apply_embedded(
        self,
        params: Params,
        embedded: Embedded,
        batch: Batch,
        *,
        deterministic: bool = True,
        rngs: dict[str, jax.Array] | None = None,
    ) -> dict[str, jax.Array]:
        """Runs the network on ``embedded``; returns at least ``{"logits": ...}``.

        Logits are ``[B, num_classes]`` for classification and ``[B, T, vocab]`` for
        language modelling and sequence-to-sequence.
        """

    @abc.abstractmethod
    def perturbable_mask(self, batch: Batch) -> dict[str, jax.Array]:
        """Returns ``{stream: [B, L] bool}``, true where a perturbation may go."""

    def apply(self, params: Params, batch: Batch, **kwargs: Any) -> dict[str, jax.Array]:
        """The plain forward pass: ``apply_embedded(params, embed(params, batch), batch)``."""
        return self.apply_embedded(params, self.embed(params, batch), batch, **kwargs)


def count_params(params: Params) -> int:
    """Total number of scalars in a parameter tree."""
    return sum(int(x.size) for x in jax.tree.leaves(params))


def token_mask(tokens: jax.Array) -> jax.Array:
    """``[B, L]`` bool, true on real (non-padding) tokens."""
    return tokens != PAD_ID


def compute_dtype(name: str) -> jnp.dtype:
    """Maps the config's dtype name to a JAX dtype."""
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]
