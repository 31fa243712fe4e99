"""Batched, jitted access to a classification run for the discrete attacks: logits of token
arrays, gradients with respect to the embedded tokens, texts to token arrays."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from llama_adv.data.base import Split
from llama_adv.data.tokenizers import EOS, SPECIALS, pad_to
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
    """Encodes texts exactly as the dataset encoded its split: tokenizer ids cut to leave room
    for the dataset's fixed suffix (e.g. EOS), then the suffix, right-padded to the split's
    width ``L``: ``ids[:L - len(suffix)] + suffix``, as ``llama_adv.data.encode.fixed_width``
    truncates (the suffix survives, so last-token pooling sees it). Attacked texts longer than
    the dataset's are cut the same way.

    Args:
      tokenizer: has ``encode_batch(texts)`` (or ``encode(text)``) and ``decode(ids)``.
      split: a split with ``texts``; the suffix is inferred from it.
      field: the token field of ``split``.
      check: how many of the first examples must re-encode to their tokens exactly.

    Raises:
      UserError: the split has no texts, or some checked example does not re-encode.
    """

    def __init__(self, tokenizer, split: Split, field: str = "inputs", check: int = 50):
        if split.texts is None:
            raise UserError("This split has no texts; text attacks need them.")
        self.tokenizer = tokenizer
        tokens = np.asarray(split.arrays[field][: max(check, 1)])
        self.length = tokens.shape[1]
        texts = list(split.texts[: len(tokens)])
        ids = self._ids(texts)
        mismatch = {}  # first example each candidate suffix gets wrong -> that suffix
        for suffix in self._suffixes(ids, tokens):
            self.suffix = suffix
            bad = np.flatnonzero(np.any(self._rows(ids) != tokens, axis=1))
            if not len(bad):
                return
            mismatch.setdefault(int(bad[0]), suffix)
        first = max(mismatch)  # report the candidate that reproduces the most examples
        self.suffix = mismatch[first]
        got = self._rows([ids[first]])[0]
        at = int(np.argmax(got != tokens[first]))
        raise UserError(
            f"Example {first}'s text does not re-encode to its tokens (position {at}: "
            f"{int(got[at])} instead of {int(tokens[first][at])}, suffix {self.suffix}); text "
            "attacks cannot reproduce this dataset's encoding."
        )

    def _ids(self, texts: list[str]) -> list[list[int]]:
        if hasattr(self.tokenizer, "encode_batch"):
            return [[int(i) for i in row] for row in self.tokenizer.encode_batch(texts)]
        return [list(self.tokenizer.encode(t)) for t in texts]

    def _suffixes(self, ids: list[list[int]], tokens: np.ndarray) -> list[list[int]]:
        """Candidate suffixes: what follows the text's ids in the first example that is not
        cut (shorter than the width), then EOS alone, then none."""
        found = []
        for seq, row in zip(ids, tokens, strict=True):
            used = int(np.max(np.flatnonzero(row), initial=-1)) + 1  # up to the last non-pad
            if used < self.length and used >= len(seq) and list(row[: len(seq)]) == seq:
                found = [[int(t) for t in row[len(seq) : used]]]
                break
        out: list[list[int]] = []
        for suffix in [*found, [int(getattr(self.tokenizer, "eos_id", EOS))], []]:
            if suffix not in out:
                out.append(suffix)
        return out

    def _rows(self, ids: list[list[int]]) -> np.ndarray:
        keep = self.length - len(self.suffix)
        rows = [pad_to(list(seq[:keep]) + self.suffix, self.length) for seq in ids]
        return np.stack(rows).astype(np.int32) if rows else np.zeros((0, self.length), np.int32)

    def encode(self, texts: list[str]) -> np.ndarray:
        """``[N, L]`` int32 token arrays."""
        return self._rows(self._ids(list(texts)))

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
