"""Sequence classification: cross-entropy on ``[B, num_classes]`` logits.

Unlabelled examples (label < 0, e.g. IMDB's ``unsup`` split used by VAT) take no part in
the loss, its denominator or accuracy; the divergence between two output distributions
needs no label, so it still counts them (VAT's consistency term).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from llama_adv.tasks.base import Batch, Outputs, Task, divergence


def labeled(batch: Batch) -> jax.Array:
    """``[B]`` float: 1 where the example has a label (``label >= 0``), else 0."""
    return (batch["label"] >= 0).astype(jnp.float32)


class ClassificationTask(Task):
    """Batches carry ``"label"`` ``[B]`` (-1 = unlabelled) and ``"weight"`` ``[B]`` (0 on
    padded examples)."""

    head = "classification"

    def example_weight(self, batch: Batch) -> jax.Array:
        return batch["weight"].astype(jnp.float32) * labeled(batch)

    def loss(self, outputs: Outputs, batch: Batch) -> jax.Array:
        # A negative label would index out of range; any class will do at weight 0.
        labels = jnp.maximum(batch["label"], 0)
        ce = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], labels)
        return ce * self.example_weight(batch)

    def denominator(self, batch: Batch) -> jax.Array:
        return self.example_weight(batch)

    def divergence_denominator(self, batch: Batch) -> jax.Array:
        return batch["weight"].astype(jnp.float32)  # unlabelled examples count here

    def divergence(self, p: Outputs, q: Outputs, batch: Batch, kind: str) -> jax.Array:
        # Label-free: padding is excluded, unlabelled examples are not.
        return divergence(p["logits"], q["logits"], kind) * batch["weight"]

    def predictions(self, outputs: Outputs) -> jax.Array:
        return jnp.argmax(outputs["logits"], axis=-1)

    def correct(self, outputs: Outputs, batch: Batch) -> jax.Array:
        return (self.predictions(outputs) == batch["label"]).astype(jnp.float32)
