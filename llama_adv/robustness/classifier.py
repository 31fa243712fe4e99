"""Batched, jitted access to a classification run for the discrete attacks: logits of token
arrays, gradients with respect to the embedded tokens, texts to token arrays."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from llama_adv.data.base import Split
from llama_adv.data.tokenizers import SPECIALS, pad_to
from llama_adv.errors import UserError
from llama_adv.models import Model
from llama_adv.tasks import Task

NUM_SPECIAL = len(SPECIALS)  # ids below this (pad, bos, eos, unk) are never candidates


def token_field(batch: dict) -> str:
    """The field holding the source tokens an attacker may edit."""
    return "encoder_inputs" if "encoder_inputs" in batch else "inputs"


def embedding_table(params: Any, vocab_size: int) -> jax.Array:
    """The ``[V, D]`` token embedding table: the first ``embedding`` leaf with at least ``V``
    rows (``nn.Embed``'s parameter name), cut to the tokenizer's ``V`` (models may pad)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = jax.tree_util.keystr(path)
        if "embedding" in name and leaf.ndim == 2 and leaf.shape[0] >= vocab_size:
            return leaf[:vocab_size]
    raise UserError("The model's parameters hold no [vocab, d_model] 'embedding' table.")


class TextCodec:
    """Encodes texts exactly as the dataset encoded its split: tokenizer ids, then the
    dataset's fixed suffix (e.g. EOS), right-padded to the split's length.

    Args:
      tokenizer: has ``encode(text) -> list[int]`` and ``decode(ids) -> str``.
      split: a split with ``texts``; the suffix is inferred from it and checked.
    """

    def __init__(self, tokenizer, split: Split, field: str = "inputs", check: int = 50):
        if split.texts is None:
            raise UserError("This split has no texts; text attacks need them.")
        self.tokenizer = tokenizer
        tokens = split.arrays[field]
        self.length = tokens.shape[1]
        first = [int(t) for t in tokens[0] if t != 0]
        self.suffix = first[len(tokenizer.encode(split.texts[0])) :]
        for i in range(min(check, len(split))):
            if not np.array_equal(self.encode([split.texts[i]])[0], tokens[i]):
                raise UserError(
                    f"Example {i}'s text does not re-encode to its tokens; text attacks "
                    "cannot reproduce this dataset's encoding."
                )

    def encode(self, texts: list[str]) -> np.ndarray:
        """``[N, L]`` int32 token arrays."""
        rows = [pad_to(self.tokenizer.encode(t) + self.suffix, self.length) for t in texts]
        return np.stack(rows).astype(np.int32)

    def decode(self, tokens: np.ndarray) -> str:
        return self.tokenizer.decode([int(t) for t in tokens])


class Classifier:
    """A classification model with fixed-shape, jitted entry points.

    Args:
      model, task, params: the run's pieces.
      field: batch field of the tokens (``inputs`` or ``encoder_inputs``).
      batch_size: rows per device call; inputs are chunked and padded to it.
      vocab_size: rows of the embedding table.
    """

    def __init__(
        self, model: Model, task: Task, params: Any, field: str, batch_size: int, vocab_size: int
    ):
        self.model, self.task, self.params = model, task, params
        self.vocab_size = vocab_size
        self.field, self.batch_size = field, batch_size
        self._logits = jax.jit(self._logits_impl)

    def batch(self, tokens, labels) -> dict[str, jax.Array]:
        """A model batch from tokens ``[B, L]`` and labels ``[B]``."""
        tokens = jnp.asarray(tokens, jnp.int32)
        return {
            self.field: tokens,
            "label": jnp.asarray(labels, jnp.int32),
            "weight": jnp.ones(tokens.shape[0], jnp.float32),
        }

    def _logits_impl(self, params, tokens):
        batch = self.batch(tokens, jnp.zeros(tokens.shape[0], jnp.int32))
        return self.model.apply(params, batch, deterministic=True)["logits"]

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """``[N, C]`` logits of ``[N, L]`` tokens, in fixed-size chunks (one compilation)."""
        out = []
        for start in range(0, len(tokens), self.batch_size):
            chunk = tokens[start : start + self.batch_size]
            padded = np.zeros((self.batch_size, chunk.shape[1]), np.int32)
            padded[: len(chunk)] = chunk
            padded[len(chunk) :] = chunk[0]  # any real row; its result is dropped
            out.append(np.asarray(self._logits(self.params, padded))[: len(chunk)])
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def predict(self, tokens: np.ndarray) -> np.ndarray:
        return np.argmax(self.logits(tokens), axis=-1)


def margin(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Logit of the true class minus the best other logit, ``[...]``; negative = wrong."""
    num_classes = logits.shape[-1]
    true = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    others = jnp.where(jax.nn.one_hot(labels, num_classes, dtype=bool), -jnp.inf, logits)
    return true - jnp.max(others, axis=-1)
