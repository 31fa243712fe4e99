"""Embedding-space attacks (PGD-K and FGM, L2 and L-inf) over a grid of radii.

One jitted step per attack and batch shape; the radius is a traced argument, so the whole
curve costs one compilation per attack. Reuses ``train.evaluate.perturbed_embeddings`` and
the attacks of ``adversarial.attacks``, which run the training methods' engine (options,
start, step, projection and step-size rule): the PGD curve is the ``pgd`` training
method's inner loop, deterministic.

Sequence-to-sequence runs (encoder-decoder) are attacked on the encoder (source) stream
only: at test time the decoder reads its own outputs, not gold targets one could perturb.
The step then also decodes greedily from the clean and from the attacked encoder stream,
and the curve reports corpus BLEU of both beside the teacher-forced loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from llama_adv.adversarial.attacks import EmbeddingAttack
from llama_adv.data.base import Split
from llama_adv.data.bleu import bleu_from_ids, split_references
from llama_adv.data.pipeline import eval_batches
from llama_adv.models import Model
from llama_adv.special_tokens import BOS_ID, EOS_ID
from llama_adv.tasks import Task
from llama_adv.train.evaluate import greedy_targets, perturbed_embeddings
from llama_adv.train.mesh import to_global, to_host

FIELDS = ("clean_correct", "adv_correct", "clean_loss", "adv_loss", "denominator", "weight")
DECODE_FIELDS = ("clean_tokens", "adv_tokens", "example_id")


def parse_attack(name: str) -> tuple[str, str]:
    """``"pgd_l2"`` -> ``("pgd", "l2")``."""
    method, _, norm = name.partition("_")
    if method not in ("pgd", "fgm") or norm not in ("l2", "linf"):
        raise ValueError(f"unknown embedding attack {name!r}; use pgd|fgm _ l2|linf")
    return method, norm


def make_attack_step(
    model: Model,
    task: Task,
    *,
    method: str,
    norm: str,
    scope: str,
    steps: int,
    step_size: float,
    streams: tuple[str, ...] | None = None,
    radius_unit: str = "absolute",
    decode_length: int = 0,
    start_id: int = BOS_ID,
    eos_id: int = EOS_ID,
) -> Callable:
    """``step(params, batch, rng, epsilon) -> {field: [B] or [B, N]}`` per-example outcomes.

    Always the ``FIELDS``; ``streams`` limits the attack to those embedding streams (None:
    all). With ``decode_length`` > 0 (an encoder-decoder seq2seq run), also
    ``DECODE_FIELDS``: greedy decodes ``[B, decode_length]`` from the clean and from the
    attacked ``"encoder"`` stream, and the examples' ids. ``step_size`` 0 means
    ``ascent.default_step_size`` (``2.5 * epsilon / steps``); under ``radius_unit =
    embedding_rms`` the radius and a set step size are multiples of the RMS L2 norm of the
    embedding rows (``robustness.radius_unit``); dropout is off.
    """
    attack = EmbeddingAttack.build(method, norm=norm, scope=scope, steps=steps, step_size=step_size)

    def step(params, batch, rng, epsilon):
        clean = model.apply(params, batch, deterministic=True)
        perturbed = perturbed_embeddings(
            model, task, params, batch, rng, attack, epsilon, streams, radius_unit
        )
        adv = model.apply_embedded(params, perturbed, batch)
        out = {
            "clean_correct": task.correct(clean, batch),
            "adv_correct": task.correct(adv, batch),
            "clean_loss": task.loss(clean, batch),
            "adv_loss": task.loss(adv, batch),
            "denominator": task.denominator(batch),
            "weight": task.example_weight(batch),
        }
        if decode_length:
            decode = dict(max_new_tokens=decode_length, start_id=start_id, eos_id=eos_id)
            out["clean_tokens"] = greedy_targets(model, params, batch, **decode)
            out["adv_tokens"] = greedy_targets(model, params, batch, perturbed["encoder"], **decode)
            out["example_id"] = batch["example_id"]
        return out

    return jax.jit(step)


def aggregate(outcomes: dict[str, np.ndarray], token_task: bool) -> dict[str, float]:
    """Exact split-level metrics from concatenated per-example outcomes."""
    w = outcomes["weight"]
    n = max(float(np.sum(w)), 1e-9)
    robust = np.minimum(outcomes["clean_correct"], outcomes["adv_correct"])
    out = {
        "clean_accuracy": float(np.sum(outcomes["clean_correct"] * w) / n),
        # TextAttack: right before and after; never above clean accuracy.
        "accuracy": float(np.sum(robust * w) / n),
    }
    denom = max(float(np.sum(outcomes["denominator"])), 1e-9)
    out["clean_loss"] = float(np.sum(outcomes["clean_loss"]) / denom)
    out["loss"] = float(np.sum(outcomes["adv_loss"]) / denom)
    if token_task:
        out["clean_perplexity"] = float(np.exp(min(out["clean_loss"], 50.0)))
        out["perplexity"] = float(np.exp(min(out["loss"], 50.0)))
    return out


def bleu_scores(outcomes: dict[str, np.ndarray], tokenizer, references: list[str]) -> dict:
    """``clean_bleu`` and ``bleu`` (under attack), 0..100, of the decodes in ``outcomes``
    (``DECODE_FIELDS``) against ``references`` (one per example of the split, by id);
    padding rows (weight 0) are dropped."""
    keep = outcomes["weight"] > 0
    refs = [references[i] for i in outcomes["example_id"][keep]]
    return {
        "clean_bleu": bleu_from_ids(tokenizer, outcomes["clean_tokens"][keep], refs),
        "bleu": bleu_from_ids(tokenizer, outcomes["adv_tokens"][keep], refs),
    }


def embedding_curve(
    step: Callable,
    params,
    split: Split,
    mesh: Mesh,
    *,
    epsilons: Sequence[float],
    batch_size: int,
    limit: int,
    rng: jax.Array,
    token_task: bool,
    progress=None,
    tokenizer=None,
) -> list[dict[str, float]]:
    """Metrics at each radius, over the first ``limit`` examples (0 = all) of ``split``.

    When ``step`` decodes (see :func:`make_attack_step`), each point also has
    ``clean_bleu`` and ``bleu``; ``tokenizer`` (default: the split's) turns ids into text.
    """
    batches = [to_global(b, mesh) for b in eval_batches(split, batch_size, limit)]
    tokenizer = tokenizer or split.tokenizer
    references = None
    results = []
    for r, epsilon in enumerate(epsilons):
        parts = []
        for i, batch in enumerate(batches):
            key = jax.random.fold_in(jax.random.fold_in(rng, r), i)
            parts.append(step(params, batch, key, jnp.float32(epsilon)))
            if progress is not None:
                progress.update(int(np.sum(to_host(batch["weight"]))))
        outcomes = {k: np.concatenate([to_host(p[k]) for p in parts]) for k in parts[0]}
        point = {"epsilon": float(epsilon), **aggregate(outcomes, token_task)}
        if "adv_tokens" in outcomes:
            references = references or split_references(split, tokenizer)
            point.update(bleu_scores(outcomes, tokenizer, references))
        results.append(point)
    return results
