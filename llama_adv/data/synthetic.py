"""Built-in synthetic tasks: no files, no download, deterministic by seed.

- ``synthetic_sentiment``: a sentiment-like language. The label is the sign of the summed
  polarity of the sentence's polarity words, where a negator ("not") flips the next
  polarity word and an intensifier ("very") doubles it; distractor words carry nothing.
  Editing a single word (dropping a "not", swapping "good" for "bad") can flip the label,
  which is what makes the task a useful target for attacks.
- ``synthetic_lm``: a corpus of such sentences for next-token prediction.
- ``synthetic_reverse``: sequence-to-sequence reversal of random letter strings.
"""

from __future__ import annotations

import numpy as np

from llama_adv.data.base import Dataset, Split
from llama_adv.data.tokenizers import BOS, EOS, WordTokenizer, pad_to

POSITIVE = ("good", "great", "excellent", "wonderful", "superb", "fine", "lovely", "brilliant")
NEGATIVE = ("bad", "awful", "terrible", "poor", "boring", "dull", "horrible", "weak")
NEGATORS = ("not", "never", "hardly")
INTENSIFIERS = ("very", "really", "extremely", "so")
DISTRACTORS = (
    "the", "movie", "film", "plot", "actor", "story", "was", "is", "and", "but", "it",
    "this", "a", "of", "scene", "music", "ending", "cast", "script", "director", "i",
    "think", "felt", "seemed", "overall", "with", "in", "acting", "visuals", "dialogue",
)  # fmt: skip
LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")
SENTIMENT_WORDS = POSITIVE + NEGATIVE + NEGATORS + INTENSIFIERS + DISTRACTORS
SPLIT_OFFSETS = {"train": 0, "validation": 1, "test": 2}


def _sentence(rng: np.random.Generator, max_words: int) -> tuple[list[str], int]:
    """One sentence and its polarity score (never 0)."""
    while True:
        words, score = [], 0
        for _ in range(rng.integers(1, 4)):  # polarity phrases: [negator] [intensifier] word
            words += [str(w) for w in rng.choice(DISTRACTORS, rng.integers(0, 4))]
            base = 1 if rng.random() < 0.5 else -1
            value = base
            if rng.random() < 0.3:
                words.append(str(rng.choice(NEGATORS)))
                value = -value
            if rng.random() < 0.3:
                words.append(str(rng.choice(INTENSIFIERS)))
                value *= 2
            words.append(str(rng.choice(POSITIVE if base > 0 else NEGATIVE)))
            score += value
        words += [str(w) for w in rng.choice(DISTRACTORS, rng.integers(0, 3))]
        if score != 0 and len(words) <= max_words:
            return words, score


def _rng(seed: int, split: str, task: str) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_OFFSETS[split], sum(map(ord, task))])


def sentiment(num_train: int, num_eval: int, max_length: int, seed: int) -> Dataset:
    """``inputs`` ``[N, max_length]`` (words then EOS, right-padded), ``label`` 1 = positive."""
    tokenizer = WordTokenizer(list(SENTIMENT_WORDS))
    splits = {}
    for split, size in (("train", num_train), ("validation", num_eval), ("test", num_eval)):
        rng = _rng(seed, split, "sentiment")
        texts, inputs, labels = [], [], []
        for _ in range(size):
            words, score = _sentence(rng, max_length - 1)
            texts.append(" ".join(words))
            inputs.append(pad_to(tokenizer.encode(texts[-1]) + [EOS], max_length))
            labels.append(int(score > 0))
        splits[split] = Split(
            {"inputs": np.stack(inputs), "label": np.asarray(labels, np.int32)}, texts
        )
    return Dataset(
        "synthetic_sentiment", "classification", splits, tokenizer, 2, ("negative", "positive")
    )


def language_model(num_train: int, num_eval: int, max_length: int, seed: int) -> Dataset:
    """Windows of a sentence stream: ``inputs`` = tokens[:-1], ``targets`` = tokens[1:]."""
    tokenizer = WordTokenizer(list(SENTIMENT_WORDS))
    splits = {}
    for split, size in (("train", num_train), ("validation", num_eval), ("test", num_eval)):
        rng = _rng(seed, split, "lm")
        stream: list[int] = []
        while len(stream) < size * (max_length + 1):
            stream += [BOS] + tokenizer.encode(" ".join(_sentence(rng, 24)[0])) + [EOS]
        windows = np.asarray(stream[: size * (max_length + 1)], np.int32)
        windows = windows.reshape(size, max_length + 1)
        splits[split] = Split(
            {
                "inputs": windows[:, :-1],
                "targets": windows[:, 1:],
                "target_weight": np.ones((size, max_length), np.float32),
            }
        )
    return Dataset("synthetic_lm", "lm", splits, tokenizer)


def reverse(num_train: int, num_eval: int, max_length: int, seed: int) -> Dataset:
    """Reverse a letter string: ``encoder_inputs`` = letters + EOS, ``targets`` = reversed
    letters + EOS, ``decoder_inputs`` = BOS + targets[:-1]."""
    tokenizer = WordTokenizer(list(LETTERS))
    splits = {}
    for split, size in (("train", num_train), ("validation", num_eval), ("test", num_eval)):
        rng = _rng(seed, split, "reverse")
        fields = {"encoder_inputs": [], "decoder_inputs": [], "targets": [], "target_weight": []}
        texts = []
        for _ in range(size):
            letters = [str(c) for c in rng.choice(LETTERS, rng.integers(3, max_length))]
            texts.append(" ".join(letters))
            target = tokenizer.encode(" ".join(reversed(letters))) + [EOS]
            fields["encoder_inputs"].append(pad_to(tokenizer.encode(texts[-1]) + [EOS], max_length))
            fields["decoder_inputs"].append(pad_to([BOS] + target[:-1], max_length))
            fields["targets"].append(pad_to(target, max_length))
            fields["target_weight"].append((fields["targets"][-1] != 0).astype(np.float32))
        splits[split] = Split({k: np.stack(v) for k, v in fields.items()}, texts)
    return Dataset("synthetic_reverse", "seq2seq", splits, tokenizer)
