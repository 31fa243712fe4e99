"""Loss terms of the chat-model methods (``cat``, ``lat``): toward / away / utility terms
over the row groups of a chat batch, unlikelihood, cutoffs and IPO.

A chat batch's rows are either harmful behaviours or utility (instruction) examples
(``batch["harmful"]`` ``[B]``, 1 on harmful rows). A harmful row holds the prompt with its
safe reply in ``inputs`` / ``targets`` / ``target_weight`` (the *toward* completion) and
the same prompt with the harmful target in ``away_inputs`` / ``away_targets`` /
``away_weight`` (the *away* completion, :func:`llama_adv.tasks.chat.away_batch`); the
prompt occupies the same positions in both, so one prompt perturbation ``[B, L, D]``
applies to either. A utility row holds its prompt and reply in the main fields and nothing
to move away from.

Every term is a mean over the target tokens of its group in the global batch (the way the
reference trainers average a sub-batch's token losses), returned as this device's share so
that the train step's gradient sum gives the global mean.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from llama_adv.adversarial.base import BatchInfo
from llama_adv.errors import UserError

AWAY = "away"  # the batch view whose fields carry the ``away_`` prefix
CHAT_FIELDS = ("harmful", "away_inputs", "away_targets", "away_weight")


def require_chat_batch(batch: dict, method: str) -> None:
    """Raises UserError unless ``batch`` is a chat batch with harmful/away fields."""
    missing = [k for k in CHAT_FIELDS if k not in batch]
    if missing:
        raise UserError(
            f"adv.method={method!r} needs a chat task with harmful behaviours "
            f"(task.name=chat; batches with {', '.join(CHAT_FIELDS)}); this batch has no "
            f"{', '.join(missing)}. Use data.name=synthetic_chat, advbench or a chat file "
            "with safe and harmful completions."
        )


def groups(batch: dict) -> tuple[jax.Array, jax.Array]:
    """``(harmful, utility)`` row weights ``[B]`` float32 (0 on padding rows)."""
    real = (batch["weight"] > 0).astype(jnp.float32)
    harmful = batch["harmful"].astype(jnp.float32) * real
    return harmful, real - harmful


def token_weights(batch: dict, view: str | None = None) -> jax.Array:
    """``[B, T]`` target-token weights of the main fields or of the ``away`` view."""
    weights = batch["away_weight"] if view == AWAY else batch["target_weight"]
    return weights.astype(jnp.float32) * batch["weight"][:, None]


def token_log_probs(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(log p(target), log(1 - p(target)))`` per position ``[B, T]`` from ``[B, T, V]``
    logits; ``log(1 - p)`` as ``logsumexp`` over the other tokens minus ``logsumexp`` over
    all (HarmBench's stable form, used by both reference codes)."""
    logits = logits.astype(jnp.float32)
    total = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    is_target = jax.nn.one_hot(targets, logits.shape[-1], dtype=bool)
    others = jax.nn.logsumexp(jnp.where(is_target, -jnp.inf, logits), axis=-1)
    return target_logit - total, others - total


def group_share(
    per_token: jax.Array, weights: jax.Array, group: jax.Array, info: BatchInfo
) -> jax.Array:
    """This device's share of the mean of ``per_token`` ``[B, T]`` over the target tokens
    (``weights`` ``[B, T]``) of the rows in ``group`` ``[B]``; 0 for an empty group."""
    w = weights * group[:, None]
    count = info.psum(jnp.sum(w))
    return jnp.sum(per_token * w) / jnp.maximum(count, 1e-9)


def unlikelihood(log_p: jax.Array, log_1mp: jax.Array, threshold: float) -> jax.Array:
    """``-log(1 - p)`` per token ``[B, T]``, 0 where ``log p < threshold`` (the token is
    already unlikely: HarmBench's ``log_1_minus_p_loss``, threshold -5 in both references)."""
    return jnp.where(log_p < threshold, 0.0, -log_1mp)


def cutoff(value: jax.Array, floor: float) -> jax.Array:
    """Continuous-AdvTrain's cutoff: ``value`` itself above ``floor``, else
    ``floor + 0.001 * value`` (the term stops pulling once it is below the floor)."""
    return jnp.where(value < floor, floor + 0.001 * value, value)


def mean_log_prob(log_p: jax.Array, weights: jax.Array) -> jax.Array:
    """Per-row mean target log-probability ``[B]`` (IPO's length-normalised log-likelihood)."""
    return jnp.sum(log_p * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


def ipo_loss(margin: jax.Array, beta: float) -> jax.Array:
    """IPO (Azar et al. 2023) per row: ``(margin - 1 / (2 beta))^2``."""
    return (margin - 1.0 / (2.0 * beta)) ** 2
