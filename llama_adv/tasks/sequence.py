"""Token-level tasks: language modelling and sequence-to-sequence.

Both score ``[B, T, vocab]`` logits against ``"targets"`` ``[B, T]`` under
``"target_weight"`` ``[B, T]``; the loss is summed over target tokens and normalised by the
number of target tokens in the global batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from llama_adv.tasks.base import Batch, Outputs, Task, divergence


class TokenTask(Task):
    head = "lm"

    def _weights(self, batch: Batch) -> jax.Array:
        return batch["target_weight"].astype(jnp.float32) * batch["weight"][:, None]

    def loss(self, outputs: Outputs, batch: Batch) -> jax.Array:
        ce = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], batch["targets"])
        return jnp.sum(ce * self._weights(batch), axis=1)

    def denominator(self, batch: Batch) -> jax.Array:
        return jnp.sum(self._weights(batch), axis=1)

    def divergence(self, p: Outputs, q: Outputs, batch: Batch, kind: str) -> jax.Array:
        per_token = divergence(p["logits"], q["logits"], kind)
        return jnp.sum(per_token * self._weights(batch), axis=1)

    def predictions(self, outputs: Outputs) -> jax.Array:
        return jnp.argmax(outputs["logits"], axis=-1)

    def correct(self, outputs: Outputs, batch: Batch) -> jax.Array:
        weights = batch["target_weight"].astype(jnp.float32)
        hits = (self.predictions(outputs) == batch["targets"]) * weights
        return jnp.sum(hits, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)

    def metrics(self, outputs: Outputs, batch: Batch) -> dict[str, tuple[jax.Array, jax.Array]]:
        weights = self._weights(batch)
        hits = (self.predictions(outputs) == batch["targets"]) * weights
        tokens = jnp.sum(weights)
        return {
            "loss": (jnp.sum(self.loss(outputs, batch)), tokens),
            "accuracy": (jnp.sum(hits), tokens),  # token accuracy
        }


class LanguageModelingTask(TokenTask):
    """Next-token prediction; batches carry ``inputs``, ``targets``, ``target_weight``."""


class Seq2SeqTask(TokenTask):
    """Target-sequence prediction given a source; batches carry ``encoder_inputs``,
    ``decoder_inputs`` (targets shifted right), ``targets`` and ``target_weight``."""
