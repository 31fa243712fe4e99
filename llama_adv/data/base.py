"""In-memory datasets: a split is a dict of equal-length numpy arrays plus its texts."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from llama_adv.errors import UserError


@dataclasses.dataclass
class Split:
    """One split: ``arrays[field]`` has the example axis first; ``texts`` for inspection.

    Every split carries ``example_id`` (stable index of the example in its split) and
    ``weight`` (1.0; evaluation padding adds rows of weight 0). ``references`` holds the
    target texts of a seq2seq split (for BLEU); ``length_buckets`` the batch lengths the
    pipeline may cut token fields to (``()``: always the full width); ``tokenizer`` the
    tokenizer that encoded it (set by :meth:`Dataset.split`), to turn predicted ids back
    into text.
    """

    arrays: dict[str, np.ndarray]
    texts: list[str] | None = None
    references: list[str] | None = None
    length_buckets: tuple[int, ...] = ()
    tokenizer: Any = None

    def __post_init__(self):
        n = len(next(iter(self.arrays.values())))
        self.arrays.setdefault("example_id", np.arange(n, dtype=np.int32))
        self.arrays.setdefault("weight", np.ones(n, np.float32))
        lengths = {k: len(v) for k, v in self.arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"split fields differ in length: {lengths}")

    def __len__(self) -> int:
        return len(self.arrays["example_id"])

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {k: v[index] for k, v in self.arrays.items()}

    def take(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        return {k: v[indices] for k, v in self.arrays.items()}


@dataclasses.dataclass
class Dataset:
    """A dataset ready for training: splits, tokenizer and what the task needs to know."""

    name: str
    task: str  # classification | lm | seq2seq
    splits: dict[str, Split]
    tokenizer: Any
    num_classes: int = 0
    class_names: tuple[str, ...] = ()

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise UserError(
                f"Dataset {self.name!r} has no split {name!r}; "
                f"valid: {', '.join(sorted(self.splits))}."
            )
        split = self.splits[name]
        if split.tokenizer is None:  # evaluation decodes predictions to text (BLEU)
            split.tokenizer = self.tokenizer
        return split
