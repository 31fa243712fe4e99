"""Gradient-guided greedy token substitution (HotFlip's first-order estimate).

Each greedy step takes the gradient of the loss with respect to the embedded tokens
``g [B, L, D]`` (one query) and estimates the loss change of replacing token ``x_i`` by
``w`` as ``(E[w] - E[x_i]) . g_i``. Candidates ``w`` are the ``K`` nearest neighbours of
``x_i`` in the model's own embedding table, never special tokens. The ``C`` best estimated
swaps are evaluated exactly (``C`` queries) and the one with the lowest true-class margin
is applied. The loop stops per example when the prediction flips or its budget of changed
tokens is spent. The whole loop is one jitted ``lax.fori_loop``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from llama_adv.robustness.classifier import NUM_SPECIAL, Classifier, embedding_table, margin


def nearest_neighbors(table: jax.Array, k: int, chunk: int = 1024) -> jax.Array:
    """``[V, k]`` ids of each row's ``k`` most cosine-similar rows, excluding itself and the
    special ids; computed in chunks so that ``V x V`` never materialises at once."""
    unit = table / jnp.maximum(jnp.linalg.norm(table, axis=-1, keepdims=True), 1e-12)
    vocab = table.shape[0]
    k = min(k, vocab - NUM_SPECIAL - 1)
    out = []
    for start in range(0, vocab, chunk):
        rows = jnp.arange(start, min(start + chunk, vocab))
        sims = unit[rows] @ unit.T
        banned = (jnp.arange(vocab)[None, :] < NUM_SPECIAL) | (jnp.arange(vocab) == rows[:, None])
        out.append(jax.lax.top_k(jnp.where(banned, -jnp.inf, sims), k)[1])
    return jnp.concatenate(out).astype(jnp.int32)


def token_budget(tokens: np.ndarray, fraction: float) -> np.ndarray:
    """``[B]`` changes allowed: ``fraction`` of the editable tokens, at least 1."""
    editable = np.sum(tokens >= NUM_SPECIAL, axis=1)
    return np.maximum(1, np.floor(fraction * editable)).astype(np.int32)


def make_hotflip(clf: Classifier, *, neighbors: int, candidates: int, max_budget: int):
    """Returns ``attack(params, tokens [B, L], labels [B], budget [B]) -> (adv_tokens,
    changed [B, L] bool, queries [B])``, jitted; ``max_budget`` bounds the greedy steps."""
    model, task = clf.model, clf.task

    def attack(params, tokens, labels, budget):
        table = embedding_table(params, clf.vocab_size)
        nbrs = nearest_neighbors(table, neighbors)

        def loss_and_logits(delta, toks):
            batch = clf.batch(toks, labels)
            embedded = model.embed(params, batch)
            stream = next(iter(embedded))  # the stream that starts with the source tokens
            perturbed = dict(embedded)
            perturbed[stream] = embedded[stream].at[:, : toks.shape[1]].add(delta)
            outputs = model.apply_embedded(params, perturbed, batch, deterministic=True)
            return jnp.sum(task.loss(outputs, batch)), outputs["logits"]

        def candidate_margins(toks, pos, ids):
            # [B, C, L] token arrays, each with one swap applied; evaluated as one batch.
            b, c = pos.shape
            cand = jnp.repeat(toks[:, None], c, axis=1)
            cand = cand.at[jnp.arange(b)[:, None], jnp.arange(c)[None], pos].set(ids)
            logits = clf._logits_impl(params, cand.reshape(b * c, -1)).reshape(b, c, -1)
            return margin(logits, jnp.repeat(labels[:, None], c, axis=1))

        def correct(logits):
            return jnp.argmax(logits, axis=-1) == labels

        def step(_, state):
            toks, changed, queries, active = state
            zeros = jnp.zeros((*toks.shape, table.shape[1]), table.dtype)
            grad, logits = jax.grad(loss_and_logits, has_aux=True)(zeros, toks)
            active = active & correct(logits) & (jnp.sum(changed, axis=1) < budget)
            cand = nbrs[toks]  # [B, L, K]
            score = jnp.einsum("blkd,bld->blk", table[cand] - table[toks][:, :, None], grad)
            editable = (toks >= NUM_SPECIAL) & ~changed
            score = jnp.where(editable[..., None], score, -jnp.inf).reshape(toks.shape[0], -1)
            best, flat = jax.lax.top_k(score, candidates)  # [B, C]
            pos, ids = (
                flat // cand.shape[2],
                cand.reshape(toks.shape[0], -1)[jnp.arange(toks.shape[0])[:, None], flat],
            )
            margins = jnp.where(jnp.isfinite(best), candidate_margins(toks, pos, ids), jnp.inf)
            pick = jnp.argmin(margins, axis=1)
            rows = jnp.arange(toks.shape[0])
            apply = active & jnp.isfinite(margins[rows, pick])
            p, w = pos[rows, pick], ids[rows, pick]
            toks = toks.at[rows, p].set(jnp.where(apply, w, toks[rows, p]))
            changed = changed.at[rows, p].set(changed[rows, p] | apply)
            queries = queries + active * (1 + jnp.sum(jnp.isfinite(best), axis=1))
            return toks, changed, queries, active

        init = (
            tokens,
            jnp.zeros(tokens.shape, bool),
            jnp.ones(tokens.shape[0], jnp.int32),
            jnp.ones(tokens.shape[0], bool),
        )
        toks, changed, queries, _ = jax.lax.fori_loop(0, max_budget, step, init)
        return toks, changed, queries

    return jax.jit(attack)


def run_hotflip(
    clf: Classifier,
    tokens: np.ndarray,
    labels: np.ndarray,
    *,
    fraction: float,
    neighbors: int,
    candidates: int,
):
    """Attacks ``[N, L]`` tokens in batches of ``clf.batch_size``.

    Returns:
      ``(adv_tokens [N, L], changed [N, L] bool, queries [N], budget [N])``.
    """
    budget = token_budget(tokens, fraction)
    max_budget = max(1, math.floor(fraction * tokens.shape[1]))
    attack = make_hotflip(clf, neighbors=neighbors, candidates=candidates, max_budget=max_budget)
    outs = []
    size = clf.batch_size
    for start in range(0, len(tokens), size):
        sl = slice(start, start + size)
        n = len(tokens[sl])
        pad = lambda a: np.concatenate([a, np.repeat(a[:1], size - n, axis=0)])  # noqa: E731
        adv, changed, queries = attack(
            clf.params, pad(tokens[sl]), pad(labels[sl]), pad(budget[sl])
        )
        outs.append((np.asarray(adv)[:n], np.asarray(changed)[:n], np.asarray(queries)[:n]))
    adv, changed, queries = (np.concatenate(x) for x in zip(*outs, strict=True))
    return adv, changed, queries, budget
