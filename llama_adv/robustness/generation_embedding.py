"""Targeted embedding-space attack on generation (Schwinn et al. 2024, "Soft Prompt
Threats: Attacking Safety Alignment and Unlearning in Open-Source LLMs through the
Embedding Space"; reference code github.com/SchwinnL/LLM_Embedding_Attack).

Minimises the target's cross-entropy (maximises ``log p(target | prompt + delta)``) over
a perturbation ``delta`` of the prompt stream's embeddings, on the positions of a mask
(the suffix by default: the reference perturbs the embeddings of a 20-token
``"! ! ... !"`` control string appended to the instruction). The whole loop is one
``lax.fori_loop`` inside one jit, batched over behaviours.

Defaults are the reference's ``embedding_attack_unlearning.py`` ``attack_config`` (the
Soft Prompt Threats code): ``iters=100``, ``step_size=0.001``, signed-gradient steps
(``embeddings_attack -= sign(grad) * step_size``), no projection, no early stopping.
(Its older ``embedding_attack_toxic.py`` uses ``step_size=0.01`` and stops early.) The L2
variant (per-token normalised gradient steps, optional per-token L2 ball) is this
project's addition for comparison with the training-time attacks.

Success is checked as in the reference (``num_affirmative_response``): the teacher-forced
argmax over the target positions equals the target, which is the same as greedy decoding
starting with the target (see ``generation.target_loss``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from llama_adv.errors import UserError
from llama_adv.models.base import Params
from llama_adv.robustness.generation import Layout, prompt_embeddings, target_logits, target_loss

#: The reference's initial control string (``control_prompt``), whose embeddings it attacks.
CONTROL_PROMPT_INIT = "! ! ! ! ! ! ! ! ! ! ! ! ! ! ! ! ! ! ! !"


@dataclasses.dataclass(frozen=True)
class EmbeddingAttackConfig:
    """Defaults: SchwinnL/LLM_Embedding_Attack ``embedding_attack_unlearning.py``.

    num_steps: gradient steps (reference ``iters`` 100).
    step_size: per-coordinate step for ``sign``, per-token L2 step for ``l2`` (reference
      0.001, signed).
    norm: ``"sign"`` (reference) or ``"l2"``.
    radius: per-token L2 ball on ``delta`` (``l2`` only; 0 = none, as the reference).
    radius_unit: ``"absolute"`` or ``"embedding_rms"``: step size and radius in units of
      the RMS L2 norm of the embedding rows (``Model.embedding_rms``).
    perturb: which positions ``delta`` may touch: ``"suffix"``, ``"prompt"`` or ``"both"``.
    early_stop: freeze a row's ``delta`` once it succeeds (reference: off for Soft Prompt
      Threats, on in ``embedding_attack_toxic.py``).
    """

    num_steps: int = 100
    step_size: float = 0.001
    norm: str = "sign"
    radius: float = 0.0
    radius_unit: str = "absolute"
    perturb: str = "suffix"
    early_stop: bool = False

    def __post_init__(self):
        if self.num_steps < 0 or self.step_size <= 0:
            raise UserError(
                f"embedding attack: need num_steps >= 0 and step_size > 0, got "
                f"{self.num_steps} and {self.step_size}."
            )
        if self.norm not in ("sign", "l2"):
            raise UserError(f"embedding attack norm {self.norm!r}; valid: sign, l2.")
        if self.radius < 0 or (self.radius and self.norm != "l2"):
            raise UserError("embedding attack radius must be >= 0 and needs norm='l2'.")
        if self.radius_unit not in ("absolute", "embedding_rms"):
            raise UserError(f"radius_unit {self.radius_unit!r}; valid: absolute, embedding_rms.")
        if self.perturb not in ("suffix", "prompt", "both"):
            raise UserError(f"perturb {self.perturb!r}; valid: suffix, prompt, both.")


def attack_mask(layout: Layout, perturb: str) -> jax.Array:
    """``[B, L]`` bool, the positions ``delta`` may touch."""
    if perturb == "suffix" and layout.suffix_length == 0:
        raise UserError("perturb='suffix' needs a suffix in the layout; use 'prompt'.")
    return {
        "suffix": layout.suffix_mask,
        "prompt": layout.prompt_mask,
        "both": layout.suffix_mask | layout.prompt_mask,
    }[perturb]


def _per_token_norm(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-24)


def embedding_attack(
    model, params: Params, layout: Layout, config: EmbeddingAttackConfig = EmbeddingAttackConfig()
) -> dict[str, jax.Array]:
    """Runs the attack on every row of ``layout``; jittable (``config`` static).

    Returns:
      embedded: ``[B, L, d_model]`` the attacked prompt-stream embeddings.
      delta: ``[B, L, d_model]`` their difference to the clean embeddings.
      losses: ``[num_steps + 1, B]`` target loss at each iterate (0 = clean).
      success: ``[num_steps + 1, B]`` bool, teacher-forced target match at each iterate.
      success_step: ``[B]`` int, the first iterate that matched, -1 if none.
      final_loss / final_success: ``[B]`` at the returned ``embedded``.
    """
    clean = jax.lax.stop_gradient(prompt_embeddings(model, params, layout)).astype(jnp.float32)
    mask = attack_mask(layout, config.perturb)[..., None].astype(jnp.float32)
    scale = model.embedding_rms(params) if config.radius_unit == "embedding_rms" else 1.0
    step_size, radius = config.step_size * scale, config.radius * scale

    def loss_fn(delta):
        loss, match = target_loss(target_logits(model, params, layout, clean + delta), layout)
        return jnp.sum(loss), (loss, match)  # rows are independent: the sum's grad is per row

    grad_fn = jax.grad(loss_fn, has_aux=True)

    def body(i, carry):
        delta, losses, success, done = carry
        grad, (loss, match) = grad_fn(delta)
        losses, success = losses.at[i].set(loss), success.at[i].set(match)
        done = done | (match if config.early_stop else False)
        if config.norm == "sign":
            step = jnp.sign(grad)
        else:
            step = grad / _per_token_norm(grad)
        new = delta - step_size * step * mask
        if config.radius:
            new = new * jnp.minimum(1.0, radius / _per_token_norm(new))
        # A frozen row (early stop) keeps its matched iterate, so its later losses repeat.
        delta = jnp.where(done[:, None, None], delta, new)
        return delta, losses, success, done

    b, n = layout.tokens.shape[0], config.num_steps
    carry = (
        jnp.zeros_like(clean),
        jnp.zeros((n + 1, b), jnp.float32),
        jnp.zeros((n + 1, b), bool),
        jnp.zeros((b,), bool),
    )
    delta, losses, success, _ = jax.lax.fori_loop(0, n, body, carry)
    _, (loss, match) = loss_fn(delta)
    losses, success = losses.at[n].set(loss), success.at[n].set(match)
    first = jnp.argmax(success, axis=0)
    return {
        "embedded": clean + delta,
        "delta": delta,
        "losses": losses,
        "success": success,
        "success_step": jnp.where(jnp.any(success, axis=0), first, -1),
        "final_loss": loss,
        "final_success": match,
    }


def make_embedding_attack(model, config: EmbeddingAttackConfig = EmbeddingAttackConfig()):
    """``attack(params, layout) -> dict`` (see :func:`embedding_attack`), jitted once per
    layout shape."""
    return jax.jit(lambda params, layout: embedding_attack(model, params, layout, config))
