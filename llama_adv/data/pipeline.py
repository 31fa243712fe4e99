"""Input pipeline: fixed-shape numpy batches, deterministic and addressable by position.

Training batch ``k`` is a pure function of (split, seed, k): grain shuffles the split with a
fresh permutation every epoch, so resuming at position ``k`` replays exactly the examples an
uninterrupted run would have seen. Each process materialises only its own share of every
global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import grain
import jax
import numpy as np

from llama_adv.data.base import Split
from llama_adv.errors import UserError

Batch = dict[str, np.ndarray]


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


class TrainStream:
    """Infinite, shuffled training batches of this process, addressed by position."""

    def __init__(self, split: Split, global_batch: int, seed: int):
        if len(split) == 0:
            raise UserError("The training split is empty.")
        self._local = local_batch_size(global_batch, "train.batch_size")
        self._process, self._count = jax.process_index(), jax.process_count()
        self._batches = (
            grain.MapDataset.source(split)
            .shuffle(seed=seed)
            .repeat(None)
            .batch(self._local, drop_remainder=True)
        )

    def batch(self, position: int) -> Batch:
        """The local part of global batch ``position`` (0-based)."""
        return self._batches[position * self._count + self._process]

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
        yield batch


def num_eval_batches(split: Split, global_batch: int, max_examples: int = 0) -> int:
    total = len(split) if not max_examples else min(max_examples, len(split))
    return -(-total // global_batch)
