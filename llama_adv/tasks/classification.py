"""Sequence classification: cross-entropy on ``[B, num_classes]`` logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from llama_adv.tasks.base import Batch, Outputs, Task, divergence


class ClassificationTask(Task):
    """Batches carry ``"label"`` ``[B]`` and ``"weight"`` ``[B]`` (0 on padded examples)."""

    head = "classification"

    def loss(self, outputs: Outputs, batch: Batch) -> jax.Array:
        ce = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], batch["label"])
        return ce * batch["weight"]

    def denominator(self, batch: Batch) -> jax.Array:
        return batch["weight"].astype(jnp.float32)

    def divergence(self, p: Outputs, q: Outputs, batch: Batch, kind: str) -> jax.Array:
        return divergence(p["logits"], q["logits"], kind) * batch["weight"]

    def predictions(self, outputs: Outputs) -> jax.Array:
        return jnp.argmax(outputs["logits"], axis=-1)

    def correct(self, outputs: Outputs, batch: Batch) -> jax.Array:
        return (self.predictions(outputs) == batch["label"]).astype(jnp.float32)
