"""Random word-noise baselines: what accuracy costs without an adversary choosing edits."""

from __future__ import annotations

import numpy as np

NOISES = ("delete", "duplicate", "swap")


def word_noise(text: str, kind: str, rate: float, rng: np.random.Generator) -> tuple[str, int]:
    """Applies ``kind`` to each word with probability ``rate``.

    ``delete`` drops the word (at least one word is kept), ``duplicate`` repeats it, ``swap``
    exchanges it with its right neighbour.

    Returns:
      The noisy text and the number of words touched.
    """
    words = text.split()
    hit = rng.random(len(words)) < rate
    if kind == "delete":
        if hit.all():
            hit[int(rng.integers(len(words)))] = False
        return " ".join(w for w, h in zip(words, hit, strict=True) if not h), int(hit.sum())
    if kind == "duplicate":
        out = [x for w, h in zip(words, hit, strict=True) for x in ([w, w] if h else [w])]
        return " ".join(out), int(hit.sum())
    if kind == "swap":
        touched, i = 0, 0
        while i < len(words) - 1:
            if hit[i]:
                words[i], words[i + 1] = words[i + 1], words[i]
                touched += 2
                i += 2  # a word moves at most once
            else:
                i += 1
        return " ".join(words), touched
    raise ValueError(f"unknown noise {kind!r}; valid: {NOISES}")


def noisy_texts(
    texts: list[str], kind: str, rate: float, seed: int
) -> tuple[list[str], np.ndarray]:
    """Noisy copies of ``texts`` and the fraction of words touched ``[N]``; example ``i``
    uses its own random stream, so results do not depend on batching."""
    out, frac = [], []
    for i, text in enumerate(texts):
        rng = np.random.default_rng([seed, i, NOISES.index(kind), int(rate * 1e6)])
        noisy, touched = word_noise(text, kind, rate, rng)
        out.append(noisy)
        frac.append(min(touched / max(len(text.split()), 1), 1.0))
    return out, np.asarray(frac)
