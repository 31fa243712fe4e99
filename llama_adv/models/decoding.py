"""Cached autoregressive decoding: greedy, temperature/top-k/top-p sampling, beam search.

Both architectures expose the same cache hooks: ``init_cache`` (zeros for a batch and a
maximum length) and ``decode_step`` (append tokens, get their logits). Each step costs one
token's forward pass; logits equal those of the full forward pass over the same tokens
(``tests/models/test_decoding.py``).

Rows that emit ``eos_id`` continue with padding (id 0), so outputs have a fixed shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from llama_adv.models.base import PAD_ID, Params, token_mask
from llama_adv.special_tokens import BOS_ID, EOS_ID

# BOS_ID, EOS_ID: the project tokenizers' ids; T5 checkpoints start with 0, end with 1


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """``[B, V]`` logits with all but the ``k`` largest of each row set to -inf (ties with
    the k-th are kept); ``k <= 0`` keeps every token."""
    if k <= 0:
        return logits
    kth = jax.lax.top_k(logits, k)[0][:, -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)


def top_p_filter(logits: jax.Array, p: float) -> jax.Array:
    """Nucleus filtering: keeps, per row of ``[B, V]`` logits, the smallest set of most
    likely tokens whose probability mass is at least ``p`` (the rest -> -inf); ``p >= 1``
    keeps every token. The most likely token is always kept."""
    if p >= 1.0:
        return logits
    ranked = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(ranked.astype(jnp.float32), axis=-1)
    # A token is needed while the mass of the tokens ranked above it is still below p.
    needed = jnp.cumsum(probs, axis=-1) - probs < p
    cutoff = jnp.min(jnp.where(needed, ranked, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits < cutoff, -jnp.inf, logits)


def sample_logits(
    logits: jax.Array, rng: jax.Array, temperature: float, top_k: int = 0, top_p: float = 1.0
) -> jax.Array:
    """``[B, V]`` logits -> ``[B]`` tokens: argmax at ``temperature <= 0``, else a sample
    of ``softmax(logits / temperature)`` restricted to the top ``top_k`` tokens (0: all)
    and then to the nucleus of mass ``top_p`` (1: all). Options are static (Python)."""
    if temperature <= 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def _loop(step, first_logits, cache, num_steps, rng, sampling, eos_id, with_logits=True):
    """Picks ``num_steps`` tokens, feeding each back through ``step(cache, tokens [B, 1])``;
    ``sampling``: ``(temperature, top_k, top_p)`` of :func:`sample_logits`.

    Returns tokens ``[B, N]`` and the logits each was picked from ``[B, N, V]`` (None
    without ``with_logits``: they are the largest array of a long decode).
    """

    def body(carry, rng):
        logits, cache, finished = carry
        token = sample_logits(logits, rng, *sampling)
        token = jnp.where(finished, PAD_ID, token)
        finished = finished | (token == eos_id)
        next_logits, cache = step(cache, token[:, None])
        return (next_logits[:, 0], cache, finished), (token, logits if with_logits else None)

    finished = jnp.zeros(first_logits.shape[:1], bool)
    rngs = jax.random.split(rng, num_steps)
    _, (tokens, logits) = jax.lax.scan(body, (first_logits, cache, finished), rngs)
    return tokens.T, None if logits is None else jnp.swapaxes(logits, 0, 1)


def generate_decoder(
    model,
    params: Params,
    prompts: jax.Array,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    rng: jax.Array | None = None,
    eos_id: int = EOS_ID,
    with_logits: bool = True,
) -> tuple[jax.Array, jax.Array | None]:
    """Continues right-padded ``prompts`` ``[B, P]`` with a decoder-only model.

    Returns ``(tokens [B, N], logits [B, N, vocab])``: the new tokens and the logits each
    was chosen from (None without ``with_logits``). Rows with shorter prompts continue
    right after their last real token (padding in the cache is masked, positions count
    real tokens only).
    """
    rng = jax.random.key(0) if rng is None else rng
    batch, length = prompts.shape
    cache = model.init_cache(params, batch, length + max_new_tokens)
    logits, cache = model.decode_step(params, cache, prompts)
    last = jnp.maximum(jnp.sum(token_mask(prompts), axis=1) - 1, 0)
    first = jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0]

    def step(cache, tokens):
        return model.decode_step(params, cache, tokens)

    sampling = (temperature, top_k, top_p)
    return _loop(step, first, cache, max_new_tokens, rng, sampling, eos_id, with_logits)


def _start(model, params, encoded, encoder_mask, length, start_id):
    """A decoder cache for ``length`` tokens holding the start token; its logits ``[B, V]``."""
    batch = encoded.shape[0]
    cache = model.init_cache(params, batch, length, encoded)
    start = jnp.full((batch, 1), start_id, jnp.int32)
    logits, cache = model.decode_step(params, cache, start, encoded, encoder_mask)
    return cache, logits[:, 0]


def generate_seq2seq(
    model,
    params: Params,
    encoder_inputs: jax.Array,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    rng: jax.Array | None = None,
    start_id: int = BOS_ID,
    eos_id: int = EOS_ID,
) -> tuple[jax.Array, jax.Array]:
    """Greedy or sampled targets for ``encoder_inputs`` ``[B, S]`` (encoder-decoder).

    The decoder starts from ``start_id``; returns ``(tokens [B, N], logits [B, N, V])``.
    """
    encoded, encoder_mask = model.encode(params, encoder_inputs)
    return generate_from_encoded(
        model, params, encoded, encoder_mask, max_new_tokens, temperature=temperature,
        top_k=top_k, top_p=top_p, rng=rng, start_id=start_id, eos_id=eos_id,
    )  # fmt: skip


def generate_from_encoded(
    model,
    params: Params,
    encoded: jax.Array,
    encoder_mask: jax.Array,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    rng: jax.Array | None = None,
    start_id: int = BOS_ID,
    eos_id: int = EOS_ID,
    with_logits: bool = True,
) -> tuple[jax.Array, jax.Array | None]:
    """:func:`generate_seq2seq` from an encoder output ``[B, S, d_model]`` and its mask
    ``[B, S]`` (``model.encode``, or ``model.encode_embedded`` of perturbed embeddings).

    Returns ``(tokens [B, N], logits [B, N, V])``; logits are None without ``with_logits``.
    """
    rng = jax.random.key(0) if rng is None else rng
    cache, first = _start(model, params, encoded, encoder_mask, max_new_tokens + 1, start_id)

    def step(cache, tokens):
        return model.decode_step(params, cache, tokens, encoded, encoder_mask)

    sampling = (temperature, top_k, top_p)
    return _loop(step, first, cache, max_new_tokens, rng, sampling, eos_id, with_logits)


def _reorder(cache: Params, index: jax.Array) -> Params:
    """Gathers cache rows ``index`` ``[B*K]``; scanned stacks keep layers on axis 0."""

    def gather(path, leaf):
        if leaf.ndim == 0:
            return leaf
        axis = 1 if any(getattr(k, "key", None) == "blocks" for k in path) else 0
        return jnp.take(leaf, index, axis=axis)

    return jax.tree_util.tree_map_with_path(gather, cache)


def beam_search(
    model,
    params: Params,
    encoder_inputs: jax.Array,
    max_new_tokens: int,
    beam_size: int,
    *,
    start_id: int = BOS_ID,
    eos_id: int = EOS_ID,
) -> tuple[jax.Array, jax.Array]:
    """Beam search for an encoder-decoder model; returns the best beam and its score.

    Scores are summed log-probabilities without length normalisation; a finished beam
    (after ``eos_id``) continues with padding at no cost. Returns ``(tokens [B, N],
    log_prob [B])``.
    """
    batch, k = encoder_inputs.shape[0], beam_size
    expanded = jnp.repeat(encoder_inputs, k, axis=0)  # [B*K, S], beams of a row adjacent
    encoded, encoder_mask = model.encode(params, expanded)
    cache, logits = _start(model, params, encoded, encoder_mask, max_new_tokens + 1, start_id)
    vocab = logits.shape[-1]
    # Only the first beam of each row is live at the start, so beams do not duplicate.
    scores = jnp.tile(jnp.array([0.0] + [-jnp.inf] * (k - 1)), (batch, 1))
    finished = jnp.zeros((batch, k), bool)
    pad_only = jnp.full((vocab,), -jnp.inf).at[PAD_ID].set(0.0)

    def body(carry, _):
        logits, cache, scores, finished, tokens = carry
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch, k, vocab)
        log_probs = jnp.where(finished[..., None], pad_only, log_probs)
        total = (scores[..., None] + log_probs).reshape(batch, k * vocab)
        scores, flat = jax.lax.top_k(total, k)
        beam, token = flat // vocab, (flat % vocab).astype(jnp.int32)
        rows = (jnp.arange(batch)[:, None] * k + beam).reshape(-1)
        tokens = jnp.take_along_axis(tokens, beam[..., None], axis=1)
        tokens = jnp.concatenate([tokens[..., 1:], token[..., None]], axis=-1)
        finished = jnp.take_along_axis(finished, beam, axis=1) | (token == eos_id)
        cache = _reorder(cache, rows)
        logits, cache = model.decode_step(
            params, cache, token.reshape(-1, 1), encoded, encoder_mask
        )
        return (logits[:, 0], cache, scores, finished, tokens), None

    # Tokens live in a fixed [B, K, N] buffer shifted left each step.
    tokens = jnp.zeros((batch, k, max_new_tokens), jnp.int32)
    carry = (logits, cache, scores, finished, tokens)
    (_, _, scores, _, tokens), _ = jax.lax.scan(body, carry, None, length=max_new_tokens)
    return tokens[:, 0], scores[:, 0]
