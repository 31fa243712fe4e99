"""DeepWordBug-style character attack: edit the most important words, within a budget.

Word importance is leave-one-out: the drop of the true-class margin when the word is
removed (one query per word). Words are then visited from the most important; each gets
one character edit, chosen among a random swap, substitution, deletion and insertion as
the one that lowers the margin most (one query per candidate). An edit is allowed only if
the summed Levenshtein distance stays within ``budget``, so the whole adversarial text is
within ``budget`` of the original. Stops per example when the prediction flips.
"""

from __future__ import annotations

import dataclasses
import string

import numpy as np

from llama_adv.robustness.classifier import Classifier, TextCodec

LETTERS = string.ascii_lowercase
EDITS = ("swap", "substitute", "delete", "insert")


def levenshtein(a: str, b: str) -> int:
    """Edit distance with unit insert, delete and substitute costs."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def edit_word(word: str, kind: str, rng: np.random.Generator) -> str | None:
    """One random character edit of ``kind``; None when the word cannot take it."""
    n = len(word)
    if kind == "swap":
        spots = [i for i in range(n - 1) if word[i] != word[i + 1]]
        if not spots:
            return None
        i = int(rng.choice(spots))
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "substitute":
        i = int(rng.integers(n))
        return word[:i] + str(rng.choice([c for c in LETTERS if c != word[i]])) + word[i + 1 :]
    if kind == "delete":
        if n < 2:  # never delete a whole word: that is word deletion, not a typo
            return None
        i = int(rng.integers(n))
        return word[:i] + word[i + 1 :]
    i = int(rng.integers(n + 1))
    return word[:i] + str(rng.choice(list(LETTERS))) + word[i:]


@dataclasses.dataclass
class CharResult:
    """Per example: adversarial text, words changed, queries, total edit distance."""

    texts: list[str]
    words_changed: np.ndarray
    num_words: np.ndarray
    queries: np.ndarray
    distance: np.ndarray


def _score(clf: Classifier, codec: TextCodec, texts: list[str], labels):
    """``(margin [N], correct [N])`` of ``texts``: true-class logit minus the best other."""
    logits = clf.logits(codec.encode(texts))
    rows = np.arange(len(texts))
    others = logits.copy()
    others[rows, labels] = -np.inf
    return logits[rows, labels] - others.max(axis=-1), np.argmax(logits, -1) == labels


def deepwordbug(
    clf: Classifier,
    codec: TextCodec,
    texts: list[str],
    labels: np.ndarray,
    *,
    budget: int,
    seed: int,
    offset: int = 0,
) -> CharResult:
    """Attacks ``texts`` (one batch of examples; ``offset`` is the index of the first, so that
    each example's random stream does not depend on batching)."""
    labels = np.asarray(labels)
    words = [t.split() for t in texts]
    n = len(texts)
    rngs = [np.random.default_rng([seed, offset + i]) for i in range(n)]
    base, active = _score(clf, codec, texts, labels)
    queries = np.ones(n, np.int64)

    # Leave-one-out importance, all examples' variants in one batched call.
    loo, owner = [], []
    for i in np.flatnonzero(active):
        for j in range(len(words[i])):
            loo.append(" ".join(words[i][:j] + words[i][j + 1 :]))
            owner.append(i)
    loo_margin = _score(clf, codec, loo, labels[owner])[0] if loo else np.zeros(0)
    order: list[list[int]] = [[] for _ in range(n)]
    at = 0
    for i in np.flatnonzero(active):
        m = len(words[i])
        drop = base[i] - loo_margin[at : at + m]
        order[i] = [int(j) for j in np.argsort(-drop, kind="stable")]
        queries[i] += m
        at += m

    current = [list(w) for w in words]
    left = np.full(n, budget, np.int64)
    changed = np.zeros(n, np.int64)
    for rank in range(max((len(w) for w in words), default=0)):
        cands, owner = [], []
        for i in np.flatnonzero(active & (left > 0)):
            if rank >= len(order[i]):
                continue
            j = order[i][rank]
            for kind in EDITS:
                new = edit_word(words[i][j], kind, rngs[i])
                if new is not None and levenshtein(words[i][j], new) <= left[i]:
                    cands.append((j, new))
                    owner.append(i)
        if not cands:
            continue
        variants = []
        for (j, new), i in zip(cands, owner, strict=True):
            variant = list(current[i])
            variant[j] = new
            variants.append(" ".join(variant))
        scores, still = _score(clf, codec, variants, labels[owner])
        best: dict[int, int] = {}
        for k, i in enumerate(owner):
            queries[i] += 1
            if i not in best or scores[k] < scores[best[i]]:
                best[i] = k
        for i, k in best.items():
            j, new = cands[k]
            left[i] -= levenshtein(words[i][j], new)
            current[i][j] = new
            changed[i] += 1
            if not still[k]:
                active[i] = False  # flipped: the attack succeeded
    adv = [" ".join(w) for w in current]
    return CharResult(
        adv, changed, np.array([max(len(w), 1) for w in words]), queries, budget - left
    )
