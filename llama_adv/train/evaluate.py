"""Evaluation: clean metrics, metrics under an embedding-space attack, and (seq2seq) corpus
BLEU of greedy decodes, exactly aggregated (sums and counts) over every example of a split."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
from jax.sharding import Mesh

from llama_adv.adversarial import attacks
from llama_adv.data.base import Split
from llama_adv.data.bleu import bleu_from_ids, split_references
from llama_adv.data.pipeline import eval_batches
from llama_adv.models import Model
from llama_adv.models.decoding import generate_from_encoded
from llama_adv.special_tokens import BOS_ID, EOS_ID
from llama_adv.tasks import Task
from llama_adv.tasks.sequence import Seq2SeqTask
from llama_adv.train.mesh import to_global, to_host

Sums = dict[str, tuple[jax.Array, jax.Array]]


def perturbed_embeddings(
    model: Model,
    task: Task,
    params,
    batch,
    rng,
    attack: attacks.EmbeddingAttack,
    epsilon,
    streams: tuple[str, ...] | None = None,
    radius_unit: str = "absolute",
) -> dict[str, jax.Array]:
    """The embedded streams ``{stream: [B, L, D]}`` plus ``attack``'s perturbation (FGM or
    PGD on the task loss, the training methods' engine) at radius ``epsilon`` (scalar,
    may be traced); only ``streams`` (None: all) are attacked; ``rng``: PGD's start key.

    ``radius_unit``: ``absolute``, or ``embedding_rms`` (``epsilon`` and a set PGD step size
    are multiples of the RMS L2 norm of ``params``' embedding rows, as ``adv.radius_unit``
    reads the training radius)."""
    unit = radius_scale(model, params, radius_unit)
    embedded = model.embed(params, batch)
    masks = {k: m.astype(jnp.float32) for k, m in model.perturbable_mask(batch).items()}
    if streams is not None:
        masks = {k: m if k in streams else jnp.zeros_like(m) for k, m in masks.items()}
    shapes = {k: v.shape for k, v in embedded.items()}

    def loss_fn(delta):
        perturbed = {k: v + delta[k].astype(v.dtype) for k, v in embedded.items()}
        return task.loss(model.apply_embedded(params, perturbed, batch), batch)

    delta = attack(loss_fn, masks, shapes, rng, epsilon * unit, unit)
    return {k: v + delta[k].astype(v.dtype) for k, v in embedded.items()}


def radius_scale(model: Model, params, radius_unit: str) -> jax.Array:
    """The absolute length of one radius unit (scalar, no gradient): 1 for ``absolute``,
    the RMS L2 norm of the embedding rows for ``embedding_rms``."""
    if radius_unit == "absolute":
        return jnp.ones((), jnp.float32)
    if radius_unit == "embedding_rms":
        return jax.lax.stop_gradient(model.embedding_rms(params).astype(jnp.float32))
    raise ValueError(f"unknown radius unit {radius_unit!r}; valid: absolute, embedding_rms")


def attack_embeddings(
    model: Model,
    task: Task,
    params,
    batch,
    rng,
    attack: attacks.EmbeddingAttack,
    epsilon,
    streams: tuple[str, ...] | None = None,
    radius_unit: str = "absolute",
):
    """Runs ``attack`` at ``epsilon`` (in ``radius_unit``) on ``streams`` (None: all);
    returns the attacked outputs."""
    perturbed = perturbed_embeddings(
        model, task, params, batch, rng, attack, epsilon, streams, radius_unit
    )
    return model.apply_embedded(params, perturbed, batch)


def greedy_targets(
    model: Model,
    params,
    batch: dict,
    encoder: jax.Array | None = None,
    *,
    max_new_tokens: int,
    start_id: int = BOS_ID,
    eos_id: int = EOS_ID,
) -> jax.Array:
    """Greedy decodes ``[B, max_new_tokens]`` of ``batch["encoder_inputs"]`` ``[B, S]``
    (encoder-decoder, key/value-cached); from the encoder stream ``encoder`` ``[B, S, D]``
    (e.g. perturbed embeddings) when given. Rows end with EOS, then padding."""
    tokens = batch["encoder_inputs"]
    if encoder is None:
        encoded, mask = model.encode(params, tokens)
    else:
        encoded, mask = model.encode_embedded(params, encoder, tokens)
    out, _ = generate_from_encoded(
        model, params, encoded, mask, max_new_tokens,
        start_id=start_id, eos_id=eos_id, with_logits=False,
    )  # fmt: skip
    return out


def bleu_unsupported(model: Model, task: Task) -> str:
    """Why a run cannot report BLEU of greedy decodes; ``""`` when it can (a seq2seq task
    on an encoder-decoder)."""
    if not isinstance(task, Seq2SeqTask):
        return "BLEU is a seq2seq metric"
    if not hasattr(model, "encode_embedded"):
        return (
            "greedy decoding for BLEU needs model.name=encoder_decoder (a decoder-only "
            "prefix LM is not decoded)"
        )
    return ""


def make_decode(model: Model) -> Callable:
    """``decode(params, batch, *, max_new_tokens, start_id, eos_id) -> tokens [B, N]``:
    :func:`greedy_targets` jitted once; one compilation per batch shape."""
    return jax.jit(
        functools.partial(greedy_targets, model),
        static_argnames=("max_new_tokens", "start_id", "eos_id"),
    )


class EvalStep:
    """A run's jitted evaluation, built once: ``eval_step(params, batch, rng) -> {name:
    (sum, count)}`` with dropout off, and ``decode`` (greedy seq2seq decodes) when
    ``no_bleu`` is empty.

    ``attack_accuracy`` counts an example as correct only if it is correct both clean and
    attacked (TextAttack's accuracy under attack), so it never exceeds clean accuracy.
    """

    def __init__(self, model: Model, task: Task, attack: mlc.ConfigDict):
        self.seq2seq = isinstance(task, Seq2SeqTask)
        self.no_bleu = bleu_unsupported(model, task)
        self.decode = None if self.no_bleu else make_decode(model)
        # eval.attack as the training methods' options (method none: no attack)
        self.attack = (
            None if attack.method == "none" else attacks.EmbeddingAttack.from_config(attack)
        )
        epsilon = attack.epsilon
        radius_unit = attack.get("radius_unit", "absolute")

        def step(params, batch, rng) -> Sums:
            outputs = model.apply(params, batch, deterministic=True)
            metrics = task.metrics(outputs, batch)
            if self.attack is not None:
                attacked = attack_embeddings(
                    model, task, params, batch, rng, self.attack, epsilon, None, radius_unit
                )
                for name, value in task.metrics(attacked, batch).items():
                    metrics[f"attack_{name}"] = value
                weight = task.example_weight(batch)
                robust = jnp.minimum(task.correct(outputs, batch), task.correct(attacked, batch))
                metrics["attack_accuracy"] = (jnp.sum(robust * weight), jnp.sum(weight))
            return metrics

        self._step = jax.jit(step)

    def __call__(self, params, batch: dict, rng) -> Sums:
        return self._step(params, batch, rng)


def make_eval_step(model: Model, task: Task, attack: mlc.ConfigDict) -> EvalStep:
    """The run's :class:`EvalStep` (jitted; dropout off)."""
    return EvalStep(model, task, attack)


def _bleu_decoder(eval_step, split: Split, config: mlc.ConfigDict) -> Callable | None:
    """``decode(params, batch) -> tokens [B, N]`` when this evaluation reports BLEU, else
    None (printing why, for a seq2seq run that cannot). Decodes up to the split's full
    target width (``data.target_max_length``)."""
    if not config.get("bleu", False) or not getattr(eval_step, "seq2seq", False):
        return None
    reason = eval_step.no_bleu or ("" if split.tokenizer else "the split has no tokenizer")
    if reason:
        print(f"evaluate: no bleu: {reason}")
        return None
    tok = split.tokenizer
    return functools.partial(
        eval_step.decode,
        max_new_tokens=split.arrays["targets"].shape[1],
        start_id=tok.bos_id,
        eos_id=tok.eos_id,
    )


def corpus_bleu_of(decoded: list[tuple[jax.Array, ...]], split: Split) -> float:
    """Corpus BLEU of decodes ``[(tokens [B, N], weight [B], example_id [B]), ...]`` (global
    arrays) against the split's references; padding rows (weight 0) are dropped."""
    tokens, weight, ids = (np.concatenate([to_host(d[i]) for d in decoded]) for i in range(3))
    keep = weight > 0
    references = split_references(split, split.tokenizer)
    return bleu_from_ids(split.tokenizer, tokens[keep], [references[i] for i in ids[keep]])


def evaluate(
    eval_step: EvalStep, params, split: Split, mesh: Mesh, config: mlc.ConfigDict, rng
) -> dict[str, float]:
    """Evaluates ``params`` on every example of ``split`` once; returns metric means (plus
    ``perplexity`` for token tasks, and ``bleu``, 0..100, for seq2seq with ``eval.bleu``)."""
    decode = _bleu_decoder(eval_step, split, config)
    totals: dict[str, tuple] = {}
    decoded: list[tuple[jax.Array, ...]] = []
    for i, batch in enumerate(eval_batches(split, config.batch_size, config.max_examples)):
        batch = to_global(batch, mesh)
        sums = eval_step(params, batch, jax.random.fold_in(rng, i))
        totals = sums if not totals else jax.tree.map(jnp.add, totals, sums)
        if decode is not None:  # fetched after the loop, so decoding overlaps dispatch
            decoded.append((decode(params, batch), batch["weight"], batch["example_id"]))
    totals = jax.device_get(totals)
    results = {k: float(s / max(c, 1e-9)) for k, (s, c) in totals.items()}
    results["num_examples"] = float(totals["accuracy"][1]) if "accuracy" in totals else 0.0
    for prefix in ("", "attack_"):
        if f"{prefix}loss" in results:
            results[f"{prefix}perplexity"] = float(np.exp(min(results[f"{prefix}loss"], 50.0)))
    if decoded:
        results["bleu"] = corpus_bleu_of(decoded, split)
    return results
