"""Corpus BLEU with sacrebleu, for translation evaluation (Multi30k en->de).

Hypotheses are decoded token ids (greedy or beam output of the encoder-decoder);
references are the raw target texts the pipeline keeps in ``Split.references``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu's corpus BLEU (13a tokenisation, exp smoothing), 0..100."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def bleu_from_ids(tokenizer, predictions: np.ndarray, references: Sequence[str]) -> float:
    """BLEU of ``predictions`` ``[N, T]`` (cut at the first EOS) against ``references``."""
    return corpus_bleu(ids_to_texts(tokenizer, predictions), references)


def ids_to_texts(tokenizer, ids: np.ndarray) -> list[str]:
    """Token ids ``[N, T]`` (text, EOS, anything) decoded to text, cut at the first EOS."""
    texts = []
    for row in np.asarray(ids):
        stop = np.flatnonzero(row == tokenizer.eos_id)
        texts.append(tokenizer.decode(row[: stop[0]] if len(stop) else row))
    return texts


def split_references(split, tokenizer) -> list[str]:
    """One reference text per example of ``split`` (a seq2seq :class:`Split`).

    The raw target texts when the split keeps them (``Split.references``); otherwise (the
    synthetic tasks) its ``targets`` decoded to text, which equal the raw targets unless
    they were truncated to the target length.
    """
    if split.references is not None:
        return list(split.references)
    return ids_to_texts(tokenizer, split.arrays["targets"])
