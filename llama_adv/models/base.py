"""The model interface every architecture implements (ARCHITECTURE.md, "The contract").

A model exposes its forward pass in two halves so that adversaries can perturb token
embeddings: ``embed`` gives one array per perturbable stream, ``apply_embedded`` runs the
rest of the network on (possibly perturbed) embeddings.

Latent streams: ``"layer:N"`` names the residual stream after block ``N`` (0-based) of
the model's main stack (the decoder; the encoder of an encoder-decoder), i.e. Hugging
Face's ``hidden_states[N + 1]``, the output of ``model.layers[N]`` that the
latent-adversarial-training code perturbs by hooking ``model.layers.{N}.mlp``. Its
positions are those of the embedding stream :attr:`Model.latent_source`.
``apply_embedded`` adds an ``embedded["layer:N"]`` ``[B, L, d_model]`` to that residual
stream; :class:`llama_adv.models.latent.LatentStreams` presents chosen latent streams as
ordinary streams (zero in ``embed``), so adversaries perturb them like embeddings.
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import jax.numpy as jnp

# Defined once in llama_adv.special_tokens (id 0 is padding in every tokenizer).
from llama_adv.special_tokens import BOS_ID, EOS_ID, PAD_ID  # noqa: F401

Params = Any
Batch = dict[str, jax.Array]
Embedded = dict[str, jax.Array]

LATENT_PREFIX = "layer:"


def latent_name(depth: int) -> str:
    """The stream name of the residual stream after block ``depth``: ``"layer:{depth}"``."""
    return f"{LATENT_PREFIX}{depth}"


def is_latent(stream: str) -> bool:
    """Whether ``stream`` names a residual stream (``layer:...``), valid or not."""
    return stream.startswith(LATENT_PREFIX)


def latent_depths(embedded: Embedded) -> dict[int, jax.Array]:
    """``{N: [B, L, d_model]}``: the ``layer:N`` entries of ``embedded`` by depth."""
    return {int(k[len(LATENT_PREFIX) :]): v for k, v in embedded.items() if is_latent(k)}


class Model(abc.ABC):
    """One interface for decoder-only and encoder-decoder models.

    Batches are dicts of arrays. Token inputs are ``"inputs"`` ``[B, T]`` (decoder-only), or
    ``"encoder_inputs"`` ``[B, S]`` and ``"decoder_inputs"`` ``[B, T]``; padding is
    ``PAD_ID`` and always on the right.
    """

    #: names of the perturbable embedding streams, e.g. ("inputs",)
    streams: tuple[str, ...]
    #: the embedding stream whose token positions the latent streams ``layer:N`` share
    latent_source: str = ""
    #: blocks of the stack the latent streams live in (0: the model has none)
    latent_depth: int = 0

    @property
    def latent_streams(self) -> tuple[str, ...]:
        """The valid latent stream names, ``("layer:0", ..., "layer:{depth - 1}")``."""
        return tuple(latent_name(i) for i in range(self.latent_depth))

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

        ``embedded`` holds the embedding streams and optionally latent perturbations
        ``"layer:N"`` ``[B, L, d_model]`` (``L`` that of :attr:`latent_source`), added to
        the residual stream after block ``N`` (see the module docstring).

        Logits are ``[B, num_classes]`` for classification and ``[B, T, vocab]`` for
        language modelling and sequence-to-sequence.
        """

    @abc.abstractmethod
    def stream_tokens(self, batch: Batch) -> dict[str, jax.Array]:
        """Returns ``{stream: [B, L] int}``, the token ids behind each embedding stream."""

    @abc.abstractmethod
    def perturbable_mask(
        self, batch: Batch, *, perturb_special: bool = False
    ) -> dict[str, jax.Array]:
        """Returns ``{stream: [B, L] bool}``, true where a perturbation may go.

        Never on padding. By default also never on the special tokens the model reads
        structurally: the classification readout token and BOS (each model says which,
        in its docstring), as Miyato et al. mask the EOS their classifier reads
        (``_mask_by_length(length - 1)``, tensorflow/models ``adversarial_text``).
        ``perturb_special=True`` (``adv.perturb_special``) leaves only padding out.
        """

    @abc.abstractmethod
    def embedding_table(self, params: Params) -> jax.Array:
        """The token embedding table ``[vocab, d_model]`` the streams are looked up in."""

    def embedding_rms(self, params: Params) -> jax.Array:
        """Scalar RMS L2 norm of the embedding rows, ``sqrt(mean_i ||E_i||^2)``, without
        gradient: the unit of ``adv.radius_unit = embedding_rms``."""
        table = jax.lax.stop_gradient(self.embedding_table(params)).astype(jnp.float32)
        return jnp.sqrt(jnp.mean(jnp.sum(table * table, axis=-1)))

    def embedding_norm(self, params: Params) -> jax.Array:
        """Scalar mean L2 norm of the embedding rows, ``mean_i ||E_i||``, without gradient
        (CAT's radius unit: Continuous-AdvTrain's ``torch.norm(embed_weights, dim=-1).mean()``)."""
        table = jax.lax.stop_gradient(self.embedding_table(params)).astype(jnp.float32)
        return jnp.mean(jnp.linalg.norm(table, axis=-1))

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
