"""The ``chat`` task: language modelling on ``[prompt ; response]``, scored on the response.

Batches are those of :mod:`llama_adv.data.chat`: ``inputs``/``targets`` ``[B, T]`` with
``target_weight`` 0 on every target inside the prompt, so the loss (the language-modelling
loss of :class:`~llama_adv.tasks.sequence.TokenTask`, unchanged) counts response tokens and
the final EOS / end-of-turn only, normalised by their number. ``prompt_mask`` ``[B, T]``
(true on the prompt tokens of ``inputs``) marks the boundary for methods
(``adv.perturb_tokens``) and generation; ``harmful`` ``[B]`` flags harmful prompts; a
dataset with harmful targets adds ``away_inputs``/``away_targets``/``away_weight``
(:func:`away_batch` views them as an ordinary batch).
"""

from __future__ import annotations

from llama_adv.tasks.base import Batch
from llama_adv.tasks.sequence import LanguageModelingTask

AWAY_FIELDS = {"inputs": "away_inputs", "targets": "away_targets", "target_weight": "away_weight"}


def away_batch(batch: Batch) -> Batch:
    """``batch`` with the away sequence (``prompt + harmful target``) as ``inputs``,
    ``targets`` and ``target_weight`` (0 on examples without one), other fields shared:
    ``task.loss(model.apply(params, away_batch(batch)), away_batch(batch))`` is the
    per-example likelihood loss of the harmful target (CAT/LAT's "away" term)."""
    missing = [v for v in AWAY_FIELDS.values() if v not in batch]
    if missing:
        raise KeyError(f"the batch has no away sequence ({', '.join(missing)})")
    return {**batch, **{k: batch[v] for k, v in AWAY_FIELDS.items()}}


class ChatTask(LanguageModelingTask):
    """Response-only next-token prediction; batches also carry ``prompt_mask`` and
    ``harmful`` (see the module docstring). The prompt's targets have weight 0 in the data,
    so this is the language-modelling task with nothing overridden: one implementation."""
