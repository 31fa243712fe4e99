"""Latent streams as ordinary perturbable streams (``adv.streams = "inputs,layer:8"``).

:class:`LatentStreams` wraps a model so that each chosen residual stream ``layer:N``
(after block ``N``, 0-based, of the decoder or of an encoder-decoder's encoder; see
:mod:`llama_adv.models.base`) looks like one more embedding stream: ``embed`` returns a
zero ``[B, L, d_model]`` for it, the adversary adds its perturbation there as on any
embedding, and the wrapped model's ``apply_embedded`` adds the result to the residual
stream at that depth. Masks and token ids are those of the positions the stream shares
(:attr:`~llama_adv.models.base.Model.latent_source`). So every method perturbs latents
with its usual geometry, and no method knows they are latents.

Radii stay in the methods' units: ``adv.radius_unit = absolute`` is absolute (LAT's
eps = 6.0 at Llama-3-8B, per token under ``adv.scope = token``), and ``embedding_rms``
is still the RMS norm of the embedding rows, which residual-stream norms (growing with
depth) do not follow.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from llama_adv.models.base import Batch, Embedded, Model, Params, is_latent


class LatentStreams(Model):
    """``model`` with the latent streams ``names`` appended to its streams.

    Everything else (``cfg``, caches, decoding) is the wrapped model's.
    """

    def __init__(self, model: Model, names: tuple[str, ...]):
        unknown = [n for n in names if n not in model.latent_streams]
        if unknown:
            raise ValueError(f"{unknown} are not latent streams of this model")
        self.model = model
        self.latents = tuple(names)
        self.streams = model.streams + self.latents
        self.latent_source = model.latent_source
        self.latent_depth = model.latent_depth

    def init(self, rng: jax.Array, batch: Batch) -> Params:
        return self.model.init(rng, batch)

    def embed(self, params: Params, batch: Batch) -> Embedded:
        """The wrapped model's streams plus a float32 zero ``[B, L, d_model]`` per latent."""
        out = self.model.embed(params, batch)
        shape = out[self.latent_source].shape
        return {**out, **{name: jnp.zeros(shape, jnp.float32) for name in self.latents}}

    def apply_embedded(self, params, embedded, batch, *, deterministic=True, rngs=None):
        return self.model.apply_embedded(
            params, embedded, batch, deterministic=deterministic, rngs=rngs
        )

    def _shared(self, per_stream: dict[str, jax.Array]) -> dict[str, jax.Array]:
        source = per_stream[self.latent_source]
        return {**per_stream, **{name: source for name in self.latents}}

    def stream_tokens(self, batch: Batch) -> dict[str, jax.Array]:
        return self._shared(self.model.stream_tokens(batch))

    def perturbable_mask(self, batch: Batch, *, perturb_special: bool = False):
        return self._shared(self.model.perturbable_mask(batch, perturb_special=perturb_special))

    def embedding_table(self, params: Params) -> jax.Array:
        return self.model.embedding_table(params)

    def embedding_rms(self, params: Params) -> jax.Array:
        return self.model.embedding_rms(params)

    def __getattr__(self, name: str) -> Any:  # cfg, module, init_cache, decode_step, ...
        if name == "model":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.model, name)


def with_latent_streams(model: Model, streams: tuple[str, ...]) -> Model:
    """``model`` wrapped in :class:`LatentStreams` for the latent names among ``streams``
    (``adv.streams`` resolved); ``model`` itself when there are none."""
    latents = tuple(s for s in streams if is_latent(s))
    return LatentStreams(model, latents) if latents else model
