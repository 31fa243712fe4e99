"""``run_generation_attacks``: GCG and the embedding-space attack against a chat model on
a list of behaviours, judged by target match and refusal phrases, with utility metrics,
written like the robustness suite's outputs (``generation_report``).

Behaviours are ``(prompt_ids, target_ids)`` pairs (no chat template, no BOS); ``prefix``
/ ``postfix`` are the template's ids around the user turn. Behaviours are attacked in
groups of ``behaviour_batch`` rows of one global layout (one compilation per attack).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from llama_adv.errors import UserError
from llama_adv.models.base import Params
from llama_adv.robustness.generation import Ids, Layout, build_layout, greedy_generate
from llama_adv.robustness.generation_embedding import (
    CONTROL_PROMPT_INIT,
    EmbeddingAttackConfig,
    make_embedding_attack,
)
from llama_adv.robustness.generation_gcg import (
    OPTIM_STR_INIT,
    GCGConfig,
    allowed_tokens,
    retokenization_filter,
    run_gcg,
)
from llama_adv.robustness.generation_judge import (
    DEMO_TEST_PREFIXES,
    attack_success,
    refusal_rate,
    success_rates,
    target_nll,
)
from llama_adv.robustness.report import provenance
from llama_adv.special_tokens import BOS_ID, EOS_ID

ATTACKS = ("gcg", "embedding")
#: llm-attacks ``demo.ipynb``: ``gen_config.max_new_tokens = 32`` for the success check.
MAX_NEW_TOKENS = 32


def _groups(n: int, size: int) -> list[np.ndarray]:
    """Row indices in groups of ``size``; the last group is filled up with row 0 (the
    filler rows' results are dropped), so every group has one shape."""
    out = []
    for start in range(0, n, size):
        index = np.arange(start, min(start + size, n))
        out.append(np.concatenate([index, np.zeros(size - len(index), index.dtype)]))
    return out


@functools.lru_cache(maxsize=16)
def _generator(model, max_new: int, eos_id: int, start_id: int):
    """One jitted greedy generator per model and length (it recompiles only for new
    shapes, not per call)."""

    def gen(params, layout, tokens, embedded):
        return greedy_generate(
            model,
            params,
            layout,
            max_new,
            tokens=tokens,
            embedded=embedded,
            eos_id=eos_id,
            start_id=start_id,
        )

    return jax.jit(gen)


def _generate(
    model,
    params,
    layout: Layout,
    groups,
    n,
    max_new,
    *,
    eos_id,
    start_id,
    tokens=None,
    embedded=None,
) -> np.ndarray:
    """``[n, max_new]`` greedy generations of every row, group by group; ``tokens`` /
    ``embedded``: one ``[group, L]`` / ``[group, L, d_model]`` array per group."""
    gen = _generator(model, max_new, eos_id, start_id)
    parts = []
    for g, index in enumerate(groups):
        sub = layout.rows(jnp.asarray(index))
        tok = None if tokens is None else jnp.asarray(tokens[g])
        emb = None if embedded is None else embedded[g]
        parts.append(np.asarray(gen(params, sub, tok, emb)))
    return np.concatenate(parts)[:n]


def _decode(tokenizer, rows: np.ndarray) -> list[str]:
    return [tokenizer.decode([int(i) for i in r]) for r in rows]


def _curves(losses: np.ndarray, success_step: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean loss per step ``[steps]`` and the fraction of rows matched by each step."""
    steps = np.arange(losses.shape[0])[:, None]
    hit = (success_step[None, :] >= 0) & (success_step[None, :] <= steps)
    return [float(x) for x in losses.mean(axis=1)], [float(x) for x in hit.mean(axis=1)]


def _summary(success: dict[str, np.ndarray], **extra) -> dict[str, Any]:
    return {**success_rates(success), "num_behaviours": len(success["target_match"]), **extra}


def run_generation_attacks(
    model,
    params: Params,
    tokenizer,
    behaviours: Sequence[tuple[Ids, Ids]],
    outdir: str | Path | None = None,
    *,
    attacks: Sequence[str] = ATTACKS,
    gcg: GCGConfig | None = None,
    embedding: EmbeddingAttackConfig | None = None,
    gcg_suffix: Ids | None = None,
    embedding_suffix: Ids | None = None,
    prefix: Ids = (),
    postfix: Ids = (),
    seq2seq: bool = False,
    start_id: int = BOS_ID,
    eos_id: int = EOS_ID,
    max_new_tokens: int = MAX_NEW_TOKENS,
    behaviour_batch: int = 8,
    heldout: Sequence[tuple[Ids, Ids]] | None = None,
    clean_prompts: Sequence[Ids] | None = None,
    phrases: Sequence[str] = DEMO_TEST_PREFIXES,
    run_name: str = "model",
    command: str = "",
) -> tuple[dict[str, Any], list[dict]]:
    """Attacks every behaviour with each of ``attacks`` and judges the greedy generations.

    Args:
      model, params: a decoder-only model (or, with ``seq2seq``, an encoder-decoder:
        prompt + suffix in the encoder, target in the decoder from ``start_id``).
      tokenizer: ``encode(text) -> ids`` and ``decode(ids) -> text`` (data/tokenizers.py).
      behaviours: ``(prompt_ids, target_ids)`` pairs.
      outdir: where ``results.json``, ``table.md``, ``curve.png``, ``examples.jsonl`` go
        (None: nothing is written).
      gcg_suffix / embedding_suffix: initial suffix ids; default the encoded
        ``OPTIM_STR_INIT`` (nanoGCG) / ``CONTROL_PROMPT_INIT`` (Schwinn et al.), whatever
        ``embedding.perturb`` is (the suffix is part of the attacked prompt).
      prefix, postfix: chat-template ids around the user turn (BOS in ``prefix``).
      max_new_tokens: greedy generation length for judging (at least the target's).
      behaviour_batch: rows attacked together (GCG evaluates ``behaviour_batch *
        search_width`` candidates per step, in chunks of ``gcg.batch_size``).
      heldout: ``(instruction_ids, response_ids)`` pairs for the held-out perplexity.
      clean_prompts: harmless prompt ids for the clean refusal rate.
      phrases: refusal phrases (default llm-attacks' demo list).

    Returns ``(results, examples)``, also written to ``outdir``.

    Raises:
      UserError: an unknown attack name, or bad behaviours (see ``build_layout``).
    """
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown:
        raise UserError(f"unknown generation attack(s) {unknown}; valid: {', '.join(ATTACKS)}.")
    if behaviour_batch < 1:
        raise UserError(f"behaviour_batch must be >= 1, got {behaviour_batch}.")
    gcg = GCGConfig() if gcg is None else gcg
    embedding = EmbeddingAttackConfig() if embedding is None else embedding
    t0 = time.perf_counter()
    prompts = [list(map(int, p)) for p, _ in behaviours]
    targets = [list(map(int, t)) for _, t in behaviours]
    n = len(prompts)
    max_new = max(max_new_tokens, max(len(t) for t in targets))
    common = dict(prefix=prefix, postfix=postfix, seq2seq=seq2seq, start_id=start_id)
    decode_kw = dict(eos_id=eos_id, start_id=start_id)
    size = min(behaviour_batch, n)
    groups = _groups(n, size)
    phrases = tuple(phrases)

    clean_layout = build_layout(prompts, targets, **common)
    clean_gen = _generate(model, params, clean_layout, groups, n, max_new, **decode_kw)
    clean_text = _decode(tokenizer, clean_gen)
    clean_ok = attack_success(clean_gen, clean_text, clean_layout, phrases)
    results: dict[str, Any] = {
        "run": run_name,
        "provenance": provenance(command),
        "num_behaviours": n,
        "max_new_tokens": max_new,
        "refusal_phrases": "llm-attacks demo test_prefixes"
        if phrases == DEMO_TEST_PREFIXES
        else f"{len(phrases)} custom phrases",
        "clean": _summary(clean_ok),
        "attacks": {},
    }
    examples: list[dict] = []

    def record(name, layout, suffixes, gen, ok, losses, steps):
        texts = _decode(tokenizer, gen)
        for i in range(n):
            examples.append(
                {
                    "attack": name,
                    "behaviour": i,
                    "prompt": tokenizer.decode(prompts[i]),
                    "target": tokenizer.decode(targets[i]),
                    "suffix": None if suffixes is None else tokenizer.decode(suffixes[i].tolist()),
                    "suffix_ids": None if suffixes is None else suffixes[i].tolist(),
                    "generation": texts[i],
                    "clean_generation": clean_text[i],
                    "target_match": bool(ok["target_match"][i]),
                    "not_refused": bool(ok["not_refused"][i]),
                    "final_loss": float(losses[i]),
                    "success_step": int(steps[i]),
                }
            )

    if "gcg" in attacks:
        t1 = time.perf_counter()
        init = tokenizer.encode(OPTIM_STR_INIT) if gcg_suffix is None else gcg_suffix
        layout = build_layout(prompts, targets, suffix=init, **common)
        vocab = int(model.embedding_table(params).shape[0])
        allowed = allowed_tokens(tokenizer, vocab, allow_non_ascii=gcg.allow_non_ascii)
        filter_fn = retokenization_filter(tokenizer) if gcg.filter_ids else None
        parts = [
            run_gcg(
                model,
                params,
                layout.rows(jnp.asarray(g)),
                gcg,
                allowed=allowed,
                filter_fn=filter_fn,
            )
            for g in groups
        ]
        out = {
            k: np.concatenate([p[k] for p in parts], axis=1 if k.endswith("losses") else 0)
            for k in parts[0]
        }
        # Every group's rows, fillers included, with their best suffix in place.
        tokens = [
            np.asarray(layout.rows(jnp.asarray(g)).with_suffix(jnp.asarray(p["best_suffix"])))
            for g, p in zip(groups, parts, strict=True)
        ]
        out = {k: (v[:, :n] if k.endswith("losses") else v[:n]) for k, v in out.items()}
        gen = _generate(model, params, layout, groups, n, max_new, tokens=tokens, **decode_kw)
        ok = attack_success(gen, _decode(tokenizer, gen), layout, phrases)
        loss_curve, success_curve = _curves(out["best_losses"], out["success_step"])
        solved = out["success_step"] >= 0
        results["attacks"]["gcg"] = _summary(
            ok,
            teacher_forced_success=float(np.mean(out["best_match"])),
            mean_final_loss=float(np.mean(out["best_loss"])),
            mean_success_step=float(np.mean(out["success_step"][solved])) if solved.any() else None,
            loss_curve=loss_curve,
            success_curve=success_curve,
            config=dataclasses.asdict(gcg),
            suffix_length=layout.suffix_length,
            seconds=time.perf_counter() - t1,
        )
        record("gcg", layout, out["best_suffix"], gen, ok, out["best_loss"], out["success_step"])

    if "embedding" in attacks:
        t1 = time.perf_counter()
        init = (
            tokenizer.encode(CONTROL_PROMPT_INIT) if embedding_suffix is None else embedding_suffix
        )
        layout = build_layout(prompts, targets, suffix=init, **common)
        attack = make_embedding_attack(model, embedding)
        parts = [attack(params, layout.rows(jnp.asarray(g))) for g in groups]
        embedded = [p["embedded"] for p in parts]
        gen = _generate(model, params, layout, groups, n, max_new, embedded=embedded, **decode_kw)
        ok = attack_success(gen, _decode(tokenizer, gen), layout, phrases)
        losses = np.concatenate([np.asarray(p["losses"]) for p in parts], axis=1)[:, :n]
        steps = np.concatenate([np.asarray(p["success_step"]) for p in parts])[:n]
        final = np.concatenate([np.asarray(p["final_loss"]) for p in parts])[:n]
        matched = np.concatenate([np.asarray(p["final_success"]) for p in parts])[:n]
        loss_curve, success_curve = _curves(losses, steps)
        solved = steps >= 0
        results["attacks"]["embedding"] = _summary(
            ok,
            teacher_forced_success=float(np.mean(matched)),
            mean_final_loss=float(np.mean(final)),
            mean_success_step=float(np.mean(steps[solved])) if solved.any() else None,
            loss_curve=loss_curve,
            success_curve=success_curve,
            config=dataclasses.asdict(embedding),
            suffix_length=layout.suffix_length,
            seconds=time.perf_counter() - t1,
        )
        record("embedding", layout, None, gen, ok, final, steps)

    utility: dict[str, Any] = {}
    if heldout:
        held = build_layout([p for p, _ in heldout], [t for _, t in heldout], **common)
        total, count = target_nll(model, params, held, behaviour_batch)
        utility.update(
            heldout_perplexity=float(np.exp(min(total / max(count, 1), 50.0))),
            heldout_nll=total / max(count, 1),
            heldout_tokens=count,
        )
    if clean_prompts:
        # Targets are not read when generating; a one-token placeholder fills the layout.
        cl = build_layout(list(clean_prompts), [[eos_id]] * len(clean_prompts), **common)
        m = len(clean_prompts)
        cgroups = _groups(m, min(behaviour_batch, m))
        texts = _decode(tokenizer, _generate(model, params, cl, cgroups, m, max_new, **decode_kw))
        utility.update(clean_refusal_rate=refusal_rate(texts, phrases), num_clean_prompts=m)
    if utility:
        results["utility"] = utility
    results["seconds"] = time.perf_counter() - t0
    if outdir is not None:
        from llama_adv.robustness.generation_report import write_outputs

        write_outputs(results, examples, Path(outdir))
    return results, examples


__all__ = ["ATTACKS", "MAX_NEW_TOKENS", "run_generation_attacks"]
