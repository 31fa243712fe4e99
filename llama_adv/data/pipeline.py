"""Input pipeline: fixed-shape numpy batches, deterministic and addressable by position.

Training batch ``k`` is a pure function of (split, seed, k): the example *indices* of the
split are shuffled with a fresh permutation every epoch (seeded by ``seed`` and the
epoch), so resuming at position ``k`` replays exactly the examples an uninterrupted run
would have seen; the loop saves ``k`` (the step) in its checkpoints. Global batch ``k`` is
made of local batches ``k * P .. k * P + P - 1`` of that index stream, and process ``p`` of
``P`` materialises only local batch ``k * P + p``: each process reads its own shard.

Shapes are bounded: when the split has ``length_buckets``, each batch's token fields are
cut to the smallest bucket holding its longest example (padding is on the right), so at
most ``len(buckets)`` shapes per field group reach ``jit``.

Length grouping (``group_batches`` > 0, with buckets): each epoch's permutation is cut into
pools of ``group_batches`` global batches, each pool is sorted by example length, and the
resulting batches are shuffled across the epoch. Batches then hold examples of similar
length and are cut to short buckets, so short-text fine-tuning (SST-2: mean 13 pieces of 48)
computes far less padding. This is the HF Trainer's ``group_by_length`` (its mega-batch of
50 batches) and fairseq's length-sorted batching; every epoch still visits each example
once, and batch ``k`` is still a pure function of (split, seed, k).
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np

from llama_adv.data.base import Split
from llama_adv.errors import UserError

Batch = dict[str, np.ndarray]

# Fields cut together to one bucket length. Decoder-only lm batches have inputs and targets
# of one length; seq2seq cuts the encoder and decoder sides separately.
SOURCE_GROUP = ("inputs", "encoder_inputs")
TARGET_GROUP = ("decoder_inputs", "targets", "target_weight")
# Chat batches (data/chat.py): per-token fields aligned with ``inputs``, cut with it.
CHAT_GROUP = ("prompt_mask", "away_inputs", "away_targets", "away_weight")


def local_batch_size(global_batch: int, what: str) -> int:
    """This process's share of a global batch; raises UserError if it does not divide."""
    count = jax.process_count()
    devices = jax.device_count()
    if global_batch % devices:
        raise UserError(
            f"{what}={global_batch} is not divisible by the {devices} devices; "
            f"use a multiple of {devices}."
        )
    return global_batch // count


def _groups(arrays) -> list[list[str]]:
    seq2seq = "encoder_inputs" in arrays
    groups = [SOURCE_GROUP, TARGET_GROUP] if seq2seq else [SOURCE_GROUP + TARGET_GROUP + CHAT_GROUP]
    return [[n for n in g if n in arrays and np.ndim(arrays[n]) == 2] for g in groups]


def _row_lengths(a: np.ndarray) -> np.ndarray:
    """Per row: 1 + the last column holding a non-zero value (0 for an all-zero row)."""
    nonzero = a != 0
    last = a.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)
    return np.where(nonzero.any(axis=1), last, 0)


def example_lengths(split: Split) -> list[tuple[list[str], np.ndarray]]:
    """Per field group: its field names and every example's used length (cached)."""
    cached = getattr(split, "_lengths", None)
    if cached is None:
        cached = []
        for names in _groups(split.arrays):
            if names:
                lengths = np.max([_row_lengths(split.arrays[n]) for n in names], axis=0)
                cached.append((names, lengths))
        split._lengths = cached
    return cached


def bucket_lengths(split: Split, indices: np.ndarray) -> dict[str, int]:
    """Field -> width for a batch of ``indices``: the smallest bucket losing nothing.

    Computed from the *global* batch's indices so that every process cuts its local part
    to the same width.
    """
    widths = {}
    for names, lengths in example_lengths(split):
        width = split.arrays[names[0]].shape[1]
        used = int(lengths[indices].max()) if len(indices) else width
        length = next((b for b in split.length_buckets if used <= b <= width), width)
        widths.update(dict.fromkeys(names, length))
    return widths


def cut(batch: Batch, widths: dict[str, int]) -> Batch:
    return {k: v[:, : widths[k]] if k in widths else v for k, v in batch.items()}


def num_shapes(split: Split) -> int:
    """How many batch shapes the split's buckets allow (the compiled-shape bound)."""
    if not split.length_buckets:
        return 1
    total = 1
    for names in _groups(split.arrays):
        if names:
            width = split.arrays[names[0]].shape[1]
            total *= len({b for b in split.length_buckets if b <= width} | {width})
    return total


class TrainStream:
    """Infinite, shuffled training batches of this process, addressed by position."""

    def __init__(self, split: Split, global_batch: int, seed: int, group_batches: int = 0):
        """``group_batches``: global batches per length-sorted pool (see the module
        docstring); 0 = batches of random lengths."""
        if len(split) == 0:
            raise UserError("The training split is empty.")
        self._split = split
        self._local = local_batch_size(global_batch, "train.batch_size")
        self._process, self._count = jax.process_index(), jax.process_count()
        if self._local > len(split):
            raise UserError(
                f"train.batch_size={global_batch} exceeds the {len(split)} examples of the "
                "training split; use a smaller batch."
            )
        # One numpy permutation per epoch, seeded by (seed, epoch) and cached: grain's
        # per-index shuffle cost ~12 ms per 64-example batch in Python; this is O(n) once
        # per epoch and a vectorised gather per batch.
        self._seed, self._perms = seed, {}
        self._global, self._group = global_batch, group_batches
        if split.length_buckets:
            print(
                f"data: length buckets {split.length_buckets} -> at most "
                f"{num_shapes(split)} compiled train-step shapes"
            )

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:  # batches span at most two epochs
                del self._perms[min(self._perms)]
            rng = np.random.default_rng([self._seed, epoch])
            perm = rng.permutation(len(self._split))
            self._perms[epoch] = self._grouped(perm, epoch, rng) if self._group else perm
        return self._perms[epoch]

    def _grouped(self, perm: np.ndarray, epoch: int, rng: np.random.Generator) -> np.ndarray:
        """``perm`` reordered so that each global batch starting in this epoch holds
        examples of similar length: pools of ``group`` batches sorted by length, then the
        whole batches shuffled. Batches are aligned to the index stream, whose epoch
        ``epoch`` starts at ``epoch * n``: the head before its first batch boundary (the end
        of a batch the previous epoch began) and the tail after its last one stay as drawn."""
        n, size = len(perm), self._global
        head = (-epoch * n) % size
        whole = (n - head) // size
        body = perm[head : head + whole * size]
        # Sort key: each field group's length (seq2seq: source, then target).
        keys = [lengths[body] for _, lengths in reversed(example_lengths(self._split))]
        pool = self._group * size
        pools = range(0, len(body), pool)
        order = [start + np.lexsort([k[start : start + pool] for k in keys]) for start in pools]
        order = np.concatenate(order) if order else np.zeros(0, np.int64)
        batches = body[order].reshape(whole, size)[rng.permutation(whole)]
        return np.concatenate([perm[:head], batches.reshape(-1), perm[head + whole * size :]])

    def indices(self, position: int, process: int | None = None) -> np.ndarray:
        """Split indices of ``process``'s part (default: this one) of batch ``position``.

        The index stream is the concatenation of the epochs' permutations; local batch
        ``j = position * P + process`` is its slice ``[j * local, (j + 1) * local)``.
        """
        process = self._process if process is None else process
        j = position * self._count + process
        stream = np.arange(j * self._local, (j + 1) * self._local)
        epochs, offsets = np.divmod(stream, len(self._split))
        out = np.empty(self._local, np.int64)
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            out[mask] = self._permutation(int(epoch))[offsets[mask]]
        return out

    def batch(self, position: int) -> Batch:
        """The local part of global batch ``position`` (0-based)."""
        batch = self._split.take(self.indices(position))
        if not self._split.length_buckets:
            return batch
        every = np.concatenate([self.indices(position, p) for p in range(self._count)])
        return cut(batch, bucket_lengths(self._split, every))

    def iterate(self, start: int) -> Iterator[Batch]:
        position = start
        while True:
            yield self.batch(position)
            position += 1


def eval_batches(split: Split, global_batch: int, max_examples: int = 0) -> Iterator[Batch]:
    """Every example of ``split`` exactly once, in order; the last batch is padded with
    copies of example 0 at weight 0 so that all batches have the same shape."""
    local = local_batch_size(global_batch, "eval.batch_size")
    process = jax.process_index()
    total = len(split) if not max_examples else min(max_examples, len(split))
    for start in range(0, total, global_batch):
        indices = np.arange(start, start + global_batch)
        valid = indices < total
        indices = np.where(valid, indices, 0)[process * local : (process + 1) * local]
        batch = split.take(indices)
        batch["weight"] = batch["weight"] * valid[process * local : (process + 1) * local]
        if split.length_buckets:
            batch = cut(
                batch, bucket_lengths(split, np.arange(start, min(start + global_batch, total)))
            )
        yield batch


def num_eval_batches(split: Split, global_batch: int, max_examples: int = 0) -> int:
    total = len(split) if not max_examples else min(max_examples, len(split))
    return -(-total // global_batch)
