"""T5's span-corruption pre-training objective (Raffel et al. 2020, Sec. 3.1.4), in numpy.

A window of ``n`` tokens gets ``round(n * density)`` noise tokens (at least 1, at most
``n - 1``) in ``round(noise / mean_span_length)`` spans (at least 1). The noise tokens
and the non-noise tokens are each cut into that many non-empty segments at random
(uniformly over the compositions), and the segments interleave, non-noise first, so the
window ends with a noise span: the semantics of ``random_spans_noise_mask`` in the t5
repository. The inputs keep the non-noise tokens and replace each noise span by one
sentinel; the targets are each sentinel followed by the span it replaced; both then end
with EOS::

    tokens   a b c d e f g h          (noise: c d, g)
    inputs   a b <S0> e f <S1> h? ... EOS
    targets  <S0> c d <S1> g EOS

Sentinels are T5's extra ids, appended past the tokenizer's pieces
(:class:`llama_adv.data.tokenizers.ExtraIds`, ``data.extra_ids``): the k-th span of a
window is id ``vocab_size - 1 - k``, counting down from the last id as T5's
``<extra_id_k>``. The text never encodes to them, so they are unambiguous.

Reproducibility: window ``i``'s mask is drawn from ``numpy.random.default_rng([seed, i])``
alone, so each window is corrupted the same way in every run with that seed, independent
of the batch order or the other windows. It is drawn once (the split is built in memory):
an epoch re-reads the same corruption, which matters little for runs under one epoch.
"""

from __future__ import annotations

import numpy as np

from llama_adv.data import encode
from llama_adv.errors import UserError


def span_counts(length: int, density: float, mean_span_length: float) -> tuple[int, int]:
    """``(noise tokens, noise spans)`` of a window of ``length`` tokens (T5's rounding)."""
    length = max(length, 2)
    noise = min(max(round(length * density), 1), length - 1)
    return noise, max(round(noise / mean_span_length), 1)


def _segments(total: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` positive lengths summing to ``total``, uniform over such compositions."""
    cuts = np.sort(rng.choice(np.arange(1, total), size=count - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [total]]))


def noise_mask(
    length: int, density: float, mean_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """``[length]`` bool: the noise tokens of one window (see the module docstring)."""
    if length == 1:  # T5 masks within max(length, 2); a single token stays clean
        return np.zeros(1, bool)
    noise, spans = span_counts(length, density, mean_span_length)
    noise_lengths = _segments(noise, spans, rng)
    clean_lengths = _segments(length - noise, spans, rng)
    interleaved = np.stack([clean_lengths, noise_lengths], axis=1).reshape(-1)
    kinds = np.tile([False, True], spans)
    return np.repeat(kinds, interleaved)


def corrupt(tokens: np.ndarray, mask: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs, targets)`` without EOS: noise spans of ``tokens`` ``[n]`` replaced by
    sentinels ``vocab_size - 1 - k`` in the inputs, and spelled out after them in the
    targets."""
    starts = mask & ~np.concatenate([[False], mask[:-1]])  # first token of each noise span
    sentinels = vocab_size - np.cumsum(starts)  # span k -> vocab_size - 1 - k
    keep = ~mask | starts
    inputs = np.where(starts, sentinels, tokens)[keep]
    targets = np.empty(int(mask.sum()) + int(starts.sum()), np.int32)
    # each noise token's target position: the noise tokens and sentinels up to it, minus 1
    where = np.cumsum(mask.astype(np.int64) + starts)[mask] - 1
    targets[where] = tokens[mask]
    targets[where[starts[mask]] - 1] = sentinels[starts]
    return inputs.astype(np.int32), targets


def window_length(
    inputs_length: int, targets_length: int, density: float, mean_span_length: float
) -> int:
    """The most raw tokens per window whose corrupted inputs and targets, each with its
    EOS, fit ``inputs_length`` and ``targets_length`` (T5's ``random_spans_helper``).

    Raises:
      UserError: not even a 2-token window fits.
    """
    best = 0
    for n in range(2, 4 * inputs_length):
        noise, spans = span_counts(n, density, mean_span_length)
        if n - noise + spans + 1 <= inputs_length and noise + spans + 1 <= targets_length:
            best = n
        elif n - noise + spans + 1 > inputs_length:
            break
    if not best:
        raise UserError(
            f"data.max_length={inputs_length} / data.target_max_length={targets_length} are "
            "too short for span corruption; raise them."
        )
    return best


def span_corruption_arrays(
    ids: list[np.ndarray],
    *,
    inputs_length: int,
    targets_length: int,
    density: float,
    mean_span_length: float,
    vocab_size: int,
    extra_ids: int,
    bos: int,
    eos: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Seq2seq arrays of the span-corrupted windows of the documents ``ids``.

    The documents are concatenated, each followed by EOS (as ``pack_lm`` with
    ``pack_eos``), and cut into windows of :func:`window_length` tokens (the last one
    shorter); window ``i`` is corrupted with the mask drawn from ``default_rng([seed, i])``.

    Returns:
      ``encoder_inputs`` ``[W, inputs_length]``, ``decoder_inputs`` / ``targets`` /
      ``target_weight`` ``[W, targets_length]`` (:func:`llama_adv.data.encode.seq2seq`).

    Raises:
      UserError: density outside (0, 1), a mean span length below 1, or fewer extra ids
        than a window has spans.
    """
    if not 0.0 < density < 1.0:
        raise UserError(f"span corruption: noise density {density} must be in (0, 1).")
    if mean_span_length < 1.0:
        raise UserError(f"span corruption: mean span length {mean_span_length} must be >= 1.")
    n = window_length(inputs_length, targets_length, density, mean_span_length)
    spans = span_counts(n, density, mean_span_length)[1]
    if extra_ids < spans:
        raise UserError(
            f"span corruption needs a sentinel per span: windows of {n} tokens have {spans} "
            f"spans but data.extra_ids={extra_ids}; set data.extra_ids >= {spans} (T5: 100)."
        )
    stream = np.concatenate([np.append(d, eos) for d in ids]).astype(np.int32)
    sources, targets = [], []
    for i, start in enumerate(range(0, len(stream), n)):
        window = stream[start : start + n]
        mask = noise_mask(len(window), density, mean_span_length, np.random.default_rng([seed, i]))
        inputs, target = corrupt(window, mask, vocab_size)
        sources.append(inputs)
        targets.append(target)
    return encode.seq2seq(sources, targets, inputs_length, targets_length, bos, eos)
