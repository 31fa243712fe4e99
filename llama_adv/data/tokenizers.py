"""Tokenizers. Every tokenizer reserves ids 0..3 for pad, bos, eos, unk."""

from __future__ import annotations

import numpy as np

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


class WordTokenizer:
    """Whitespace tokenizer over a fixed word list (the synthetic tasks' vocabulary)."""

    def __init__(self, words: list[str]):
        self.words = list(SPECIALS) + list(words)
        self.ids = {w: i for i, w in enumerate(self.words)}

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(w, UNK) for w in text.split()]

    def decode(self, ids) -> str:
        return " ".join(self.words[i] for i in ids if i not in (PAD, BOS, EOS))


class ByteTokenizer:
    """UTF-8 bytes shifted past the special ids: vocabulary of 260, no training."""

    vocab_size = 256 + len(SPECIALS)

    def encode(self, text: str) -> list[int]:
        return [b + len(SPECIALS) for b in text.encode("utf-8")]

    def decode(self, ids) -> str:
        data = bytes(i - len(SPECIALS) for i in ids if i >= len(SPECIALS))
        return data.decode("utf-8", errors="replace")


def pad_to(ids: list[int], length: int) -> np.ndarray:
    """Truncates or right-pads ``ids`` to ``length`` (int32)."""
    out = np.full(length, PAD, np.int32)
    ids = ids[:length]
    out[: len(ids)] = ids
    return out
