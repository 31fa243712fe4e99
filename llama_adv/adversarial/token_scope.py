"""``adv.perturb_tokens``: which tokens of a chat batch a method may perturb.

``all`` (default): every token the model allows (``model.perturbable_mask``); ``prompt``:
only the prompt tokens of ``inputs`` (``batch["prompt_mask"]``, the chat task's), e.g. CAT's
attack on the instruction; ``response``: only the tokens after the prompt. The restriction
is applied by :meth:`~llama_adv.adversarial.base.Method.masks`, so every method's attack,
random start and projection see it; a stream's mask must be aligned with ``inputs`` (the
decoder's ``inputs`` stream and its latent ``layer:N`` streams are ``[B, T]`` like it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from llama_adv.errors import UserError

PERTURB_TOKENS = ("all", "prompt", "response")


def needs_prompts(which: str, task: str) -> UserError | None:
    """The error of ``adv.perturb_tokens=which`` on task ``task``, or None when it runs."""
    if which == "all" or task == "chat":
        return None
    return UserError(
        f"adv.perturb_tokens={which} needs a task with prompts (task.name=chat, whose "
        f"batches carry prompt_mask); task.name={task} has none. Use adv.perturb_tokens=all."
    )


def restrict(masks: dict[str, jax.Array], batch: dict, which: str) -> dict[str, jax.Array]:
    """``masks`` ``{stream: [B, T]}`` intersected with the prompt (``which="prompt"``) or
    the response (``"response"``) positions of ``batch["prompt_mask"]`` ``[B, T]``."""
    if which == "all":
        return masks
    if which not in PERTURB_TOKENS:
        raise UserError(f"adv.perturb_tokens must be one of {PERTURB_TOKENS}, got {which!r}.")
    if "prompt_mask" not in batch:
        raise UserError(
            f"adv.perturb_tokens={which} needs batches with prompt_mask (task.name=chat)."
        )
    prompt = batch["prompt_mask"].astype(bool)
    keep = prompt if which == "prompt" else ~prompt
    out = {}
    for stream, mask in masks.items():
        if mask.shape != keep.shape:
            raise ValueError(
                f"adv.perturb_tokens: stream {stream!r} has a mask of shape {mask.shape}, "
                f"not aligned with prompt_mask {keep.shape}"
            )
        out[stream] = mask * keep.astype(mask.dtype) if mask.dtype != bool else mask & keep
    return out


def token_counts(masks: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Per stream, ``[B]`` number of perturbable tokens (for tests and metrics)."""
    return {k: jnp.sum(m.astype(jnp.float32), axis=1) for k, m in masks.items()}
