"""Shared pieces of the attacks on generation: the token layout, the target loss and
greedy decoding from (possibly perturbed) prompt embeddings.

A *behaviour* is a prompt and the target the attacker wants the model to start its
answer with (AdvBench: "Write a script that ..." / "Sure, here is a script that ...").
Every row of a :class:`Layout` is right-padded (the models' convention):

* decoder-only: ``prefix + prompt + suffix + postfix + target`` in ``tokens``; the logits
  that predict target token ``j`` sit at ``predictor[:, j]`` (the position before it);
* encoder-decoder: ``prefix + prompt + suffix + postfix`` in the encoder, the target in
  the decoder (``decoder_inputs`` = start token + target shifted right).

``prefix`` / ``postfix`` are fixed token ids around the user turn (a chat template's
``[INST]`` ... ``[/INST]``, or a BOS); the suffix is what GCG optimises (the embedding
attack may perturb its embeddings, the prompt's, or both). The suffix of row ``b`` starts
at a per-row position (prompts differ in length), so it is written through
``suffix_index`` (``[B, L]``, the suffix position or -1) rather than a static slice.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from llama_adv.errors import UserError
from llama_adv.models.base import PAD_ID, Params, token_mask
from llama_adv.models.decoder import DecoderOnlyModel
from llama_adv.models.decoding import generate_from_encoded
from llama_adv.special_tokens import BOS_ID, EOS_ID

Ids = Sequence[int] | np.ndarray


@flax.struct.dataclass
class Layout:
    """A batch of behaviours laid out for one architecture (see the module docstring).

    tokens: ``[B, L]`` int, the decoder-only sequence or the encoder input.
    decoder_inputs: ``[B, T]`` int (encoder-decoder) or ``[B, 0]`` (decoder-only).
    targets / target_mask: ``[B, T]`` int / bool, the target and its real positions.
    predictor: ``[B, T]`` int, the logits position that predicts each target token.
    suffix_index: ``[B, L]`` int, the suffix position at each token, -1 elsewhere.
    prompt_mask: ``[B, L]`` bool, the user prompt's tokens (not prefix, suffix, postfix).
    prompt_length: ``[B]`` int, tokens before the target (what generation starts from).
    """

    tokens: jax.Array
    decoder_inputs: jax.Array
    targets: jax.Array
    target_mask: jax.Array
    predictor: jax.Array
    suffix_index: jax.Array
    prompt_mask: jax.Array
    prompt_length: jax.Array
    seq2seq: bool = flax.struct.field(pytree_node=False, default=False)
    suffix_length: int = flax.struct.field(pytree_node=False, default=0)

    @property
    def stream(self) -> str:
        """The embedding stream the prompt lives in."""
        return "encoder" if self.seq2seq else "inputs"

    @property
    def suffix_mask(self) -> jax.Array:
        """``[B, L]`` bool, true on the suffix."""
        return self.suffix_index >= 0

    def batch(self, tokens: jax.Array | None = None) -> dict[str, jax.Array]:
        """The model batch of this layout, optionally with other ``tokens`` ``[B, L]``."""
        tokens = self.tokens if tokens is None else tokens
        if self.seq2seq:
            return {"encoder_inputs": tokens, "decoder_inputs": self.decoder_inputs}
        return {"inputs": tokens}

    def suffixes(self, tokens: jax.Array | None = None) -> jax.Array:
        """``[B, S]`` the suffix ids currently in ``tokens`` (default: the layout's)."""
        tokens = self.tokens if tokens is None else tokens
        start = jnp.argmax(self.suffix_mask, axis=1)
        index = start[:, None] + jnp.arange(self.suffix_length)[None, :]
        return jnp.take_along_axis(tokens, index, axis=1)

    def with_suffix(self, suffix: jax.Array) -> jax.Array:
        """``[B, L]`` tokens with the suffix replaced by ``suffix`` ``[B, S]``."""
        return place(self.suffix_index, suffix, self.tokens)

    def generation_prompt(self) -> jax.Array:
        """``[B, L]`` the tokens generation starts from (the target blanked), right-padded."""
        keep = jnp.arange(self.tokens.shape[1])[None, :] < self.prompt_length[:, None]
        return jnp.where(keep, self.tokens, PAD_ID)

    def rows(self, index: jax.Array) -> Layout:
        """The layout of rows ``index`` ``[N]`` (repeats allowed)."""
        return jax.tree.map(lambda x: jnp.take(x, index, axis=0), self)


def place(index: jax.Array, values: jax.Array, base: jax.Array) -> jax.Array:
    """Writes ``values`` ``[B, S, ...]`` into ``base`` ``[B, L, ...]`` where ``index``
    ``[B, L]`` (a position in ``values`` or -1) says so."""
    picked = jnp.take_along_axis(
        values, jnp.maximum(index, 0).reshape(*index.shape, *([1] * (values.ndim - 2))), axis=1
    )
    where = (index >= 0).reshape(*index.shape, *([1] * (base.ndim - 2)))
    return jnp.where(where, picked.astype(base.dtype), base)


def _ids(x: Ids, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.int64).reshape(-1)
    if np.any(arr == PAD_ID):
        raise UserError(f"{what} contains the padding id {PAD_ID}; remove it.")
    return arr


def build_layout(
    prompts: Sequence[Ids],
    targets: Sequence[Ids],
    *,
    suffix: Ids = (),
    prefix: Ids = (),
    postfix: Ids = (),
    seq2seq: bool = False,
    start_id: int = BOS_ID,
) -> Layout:
    """Lays out behaviours ``(prompts[i], targets[i])`` (token ids, no padding).

    Args:
      prompts, targets: one id sequence each per behaviour; targets must not be empty.
      suffix: the initial suffix, the same for every row (GCG's ``optim_str_init``).
      prefix, postfix: fixed ids before the prompt and after the suffix (chat template;
        include BOS in ``prefix`` if the model was trained with one).
      seq2seq: lay out for an encoder-decoder model (target in the decoder).
      start_id: the decoder start token (encoder-decoder only).

    Raises:
      UserError: mismatched lists, an empty target, or padding ids in the input.
    """
    if len(prompts) != len(targets) or not len(prompts):
        raise UserError(
            f"need as many prompts as targets (at least one); got {len(prompts)} prompts and "
            f"{len(targets)} targets."
        )
    suffix, prefix, postfix = (
        _ids(suffix, "suffix"),
        _ids(prefix, "prefix"),
        _ids(postfix, "postfix"),
    )
    prompts = [_ids(p, f"prompt {i}") for i, p in enumerate(prompts)]
    targets = [_ids(t, f"target {i}") for i, t in enumerate(targets)]
    if any(len(t) == 0 for t in targets):
        raise UserError("every target needs at least one token.")
    fixed = len(prefix) + len(suffix) + len(postfix)
    if any(fixed + len(p) == 0 for p in prompts):
        raise UserError("every behaviour needs at least one token before its target.")
    b, s = len(prompts), len(suffix)
    width_t = max(len(t) for t in targets)
    heads = [np.concatenate([prefix, p, suffix, postfix]) for p in prompts]
    rows = (
        heads if seq2seq else [np.concatenate([h, t]) for h, t in zip(heads, targets, strict=True)]
    )
    width = max(len(r) for r in rows)
    tokens = np.full((b, width), PAD_ID, np.int32)
    suffix_index = np.full((b, width), -1, np.int32)
    prompt_mask = np.zeros((b, width), bool)
    target_arr = np.full((b, width_t), PAD_ID, np.int32)
    target_mask = np.zeros((b, width_t), bool)
    predictor = np.zeros((b, width_t), np.int32)
    decoder_inputs = np.zeros((b, width_t if seq2seq else 0), np.int32)
    for i, (row, p, t) in enumerate(zip(rows, prompts, targets, strict=True)):
        tokens[i, : len(row)] = row
        start = len(prefix) + len(p)
        suffix_index[i, start : start + s] = np.arange(s)
        prompt_mask[i, len(prefix) : start] = True
        target_arr[i, : len(t)] = t
        target_mask[i, : len(t)] = True
        head = len(heads[i])
        if seq2seq:
            predictor[i] = np.arange(width_t)
            decoder_inputs[i, 0] = start_id
            decoder_inputs[i, 1 : len(t)] = t[:-1]
        else:  # position head + j holds target j; the one before predicts it
            predictor[i] = np.minimum(head - 1 + np.arange(width_t), width - 1)
    prompt_length = np.array([len(h) for h in heads], np.int32)
    return Layout(
        tokens=jnp.asarray(tokens),
        decoder_inputs=jnp.asarray(decoder_inputs),
        targets=jnp.asarray(target_arr),
        target_mask=jnp.asarray(target_mask),
        predictor=jnp.asarray(predictor),
        suffix_index=jnp.asarray(suffix_index),
        prompt_mask=jnp.asarray(prompt_mask),
        prompt_length=jnp.asarray(prompt_length),
        seq2seq=seq2seq,
        suffix_length=s,
    )


def target_logits(
    model,
    params: Params,
    layout: Layout,
    embedded: jax.Array | None = None,
    tokens: jax.Array | None = None,
) -> jax.Array:
    """``[B, T, vocab]`` float32 logits at the target positions.

    ``embedded`` ``[B, L, d_model]`` replaces the prompt stream's embeddings (the
    attacks' perturbed or one-hot embeddings); ``tokens`` ``[B, L]`` replaces the
    layout's tokens (GCG's candidates). Dropout is off.
    """
    batch = layout.batch(tokens)
    if embedded is None:
        logits = model.apply(params, batch, deterministic=True)["logits"]
    else:
        streams = model.embed(params, batch)
        streams[layout.stream] = embedded.astype(streams[layout.stream].dtype)
        logits = model.apply_embedded(params, streams, batch, deterministic=True)["logits"]
    return jnp.take_along_axis(logits, layout.predictor[..., None], axis=1).astype(jnp.float32)


def target_loss(logits: jax.Array, layout: Layout) -> tuple[jax.Array, jax.Array]:
    """Per-row mean cross-entropy of the target ``[B]`` (nanoGCG's and Schwinn et al.'s
    loss: the mean over target tokens) and whether the teacher-forced argmax equals the
    target at every target position ``[B]`` bool.

    The match is exactly "greedy decoding starts with the target": greedy token ``j`` is
    the argmax given the prompt and greedy tokens ``< j``; while those equal the target's,
    that context is the teacher-forced one, so by induction greedy decoding reproduces all
    ``T`` target tokens iff every teacher-forced argmax does (up to float differences
    between the cached and the full forward pass, and ties).
    """
    mask = layout.target_mask.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, layout.targets)
    loss = jnp.sum(ce * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
    hit = (jnp.argmax(logits, axis=-1) == layout.targets) | ~layout.target_mask
    return loss, jnp.all(hit, axis=1)


def prompt_embeddings(model, params: Params, layout: Layout) -> jax.Array:
    """``[B, L, d_model]`` the clean embeddings of the layout's prompt stream."""
    return model.embed(params, layout.batch())[layout.stream]


def greedy_generate(
    model,
    params: Params,
    layout: Layout,
    max_new_tokens: int,
    *,
    embedded: jax.Array | None = None,
    tokens: jax.Array | None = None,
    eos_id: int = EOS_ID,
    start_id: int = BOS_ID,
) -> jax.Array:
    """``[B, max_new_tokens]`` greedy continuations of the layout's prompts (the target
    is not fed), from the clean embeddings, from ``embedded`` ``[B, L, d_model]`` (the
    embedding attack's) or from other ``tokens`` ``[B, L]`` (GCG's suffix). Rows that
    emit ``eos_id`` continue with padding. Jittable.

    Decoder-only models prefill their key/value cache with the embeddings (the module's
    own ``decode`` mode, as ``decode_step`` does for tokens) and continue with
    ``decode_step``; encoder-decoder models use ``decoding.generate_from_encoded`` on the
    encoder output of the embeddings.
    """
    prompt = layout.generation_prompt() if tokens is None else tokens
    if layout.seq2seq:
        if embedded is None:
            embedded = model.embed(
                params, {"encoder_inputs": prompt, "decoder_inputs": layout.decoder_inputs}
            )["encoder"]
        encoded, mask = model.encode_embedded(params, embedded, prompt)
        out, _ = generate_from_encoded(
            model,
            params,
            encoded,
            mask,
            max_new_tokens,
            start_id=start_id,
            eos_id=eos_id,
            with_logits=False,
        )
        return out
    if not isinstance(model, DecoderOnlyModel):
        raise UserError(
            f"greedy generation from embeddings needs a DecoderOnlyModel, got "
            f"{type(model).__name__}."
        )
    keep = jnp.arange(prompt.shape[1])[None, :] < layout.prompt_length[:, None]
    prompt = jnp.where(keep, prompt, PAD_ID)
    if embedded is None:
        embedded = model.embed(params, {"inputs": prompt})["inputs"]
    embedded = jnp.where(keep[..., None], embedded, 0.0)
    batch, length = prompt.shape
    cache = model.init_cache(params, batch, length + max_new_tokens)
    logits, state = model.module.apply(
        {"params": params, "cache": cache},
        embedded,
        token_mask(prompt),
        True,
        True,
        mutable=["cache"],
    )
    first = jnp.take_along_axis(logits, (layout.prompt_length - 1)[:, None, None], axis=1)[:, 0]

    def body(carry, _):
        logits, cache, finished = carry
        token = jnp.where(finished, PAD_ID, jnp.argmax(logits, axis=-1).astype(jnp.int32))
        finished = finished | (token == eos_id)
        next_logits, cache = model.decode_step(params, cache, token[:, None])
        return (next_logits[:, 0], cache, finished), token

    carry = (first, state["cache"], jnp.zeros((batch,), bool))
    _, out = jax.lax.scan(body, carry, None, length=max_new_tokens)
    return out.T
