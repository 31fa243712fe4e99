"""The task interface: losses as per-example sums plus a denominator.

Returning sums and denominators (not means) makes aggregation exact across devices,
processes and evaluation batches: the global loss is ``sum(loss) / sum(denominator)``.
"""

from __future__ import annotations

import abc

import jax
import jax.numpy as jnp

Batch = dict[str, jax.Array]
Outputs = dict[str, jax.Array]

DIVERGENCES = ("kl", "reverse_kl", "symmetric_kl")


def _kl(p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
    """KL(p || q) over the last axis, from logits; shape without the last axis."""
    p_log = jax.nn.log_softmax(p_logits.astype(jnp.float32))
    q_log = jax.nn.log_softmax(q_logits.astype(jnp.float32))
    return jnp.sum(jnp.exp(p_log) * (p_log - q_log), axis=-1)


def divergence(p_logits: jax.Array, q_logits: jax.Array, kind: str) -> jax.Array:
    """``kl`` = KL(p||q), ``reverse_kl`` = KL(q||p), ``symmetric_kl`` = their sum."""
    if kind == "kl":
        return _kl(p_logits, q_logits)
    if kind == "reverse_kl":
        return _kl(q_logits, p_logits)
    if kind == "symmetric_kl":
        return _kl(p_logits, q_logits) + _kl(q_logits, p_logits)
    raise ValueError(f"unknown divergence {kind!r}; valid: {DIVERGENCES}")


class Task(abc.ABC):
    """Loss, divergence, predictions and metrics for one kind of supervision."""

    #: the model head this task needs: "lm" or "classification"
    head: str

    @abc.abstractmethod
    def loss(self, outputs: Outputs, batch: Batch) -> jax.Array:
        """Per-example loss ``[B]``: already multiplied by example/token weights and summed
        over tokens, so that the batch loss is ``sum(loss) / sum(denominator(batch))``."""

    @abc.abstractmethod
    def denominator(self, batch: Batch) -> jax.Array:
        """Per-example weight ``[B]`` of the loss (1 per example, or per target token)."""

    @abc.abstractmethod
    def divergence(self, p: Outputs, q: Outputs, batch: Batch, kind: str) -> jax.Array:
        """Per-example divergence ``[B]`` between two outputs, weighted like ``loss``."""

    def divergence_denominator(self, batch: Batch) -> jax.Array:
        """Per-example weight ``[B]`` of divergence terms (``denominator`` unless the task's
        loss leaves out examples its label-free divergence keeps)."""
        return self.denominator(batch)

    @abc.abstractmethod
    def predictions(self, outputs: Outputs) -> jax.Array:
        """Predicted class ``[B]`` or tokens ``[B, T]``."""

    @abc.abstractmethod
    def correct(self, outputs: Outputs, batch: Batch) -> jax.Array:
        """Per-example ``[B]`` fraction of correct predictions (unweighted)."""

    def example_weight(self, batch: Batch) -> jax.Array:
        """``[B]`` weight of each example in example-level metrics (accuracy, accuracy under
        attack): ``weight`` (0 on padding); classification also zeroes unlabelled rows."""
        return batch["weight"].astype(jnp.float32)

    def metrics(self, outputs: Outputs, batch: Batch) -> dict[str, tuple[jax.Array, jax.Array]]:
        """Evaluation metrics as ``{name: (sum, count)}`` over the batch."""
        weight = self.example_weight(batch)
        return {
            "loss": (jnp.sum(self.loss(outputs, batch)), jnp.sum(self.denominator(batch))),
            "accuracy": (jnp.sum(self.correct(outputs, batch) * weight), jnp.sum(weight)),
        }
