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
    hypotheses = []
    for row in np.asarray(predictions):
        stop = np.flatnonzero(row == tokenizer.eos_id)
        hypotheses.append(tokenizer.decode(row[: stop[0]] if len(stop) else row))
    return corpus_bleu(hypotheses, references)
