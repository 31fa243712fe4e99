"""``neftune`` (Jain et al. 2023, "NEFTune: Noisy Embeddings Improve Instruction Finetuning").

During training only, each example's token embeddings get ``U(-1, 1) * alpha / sqrt(L * d)``
added, with ``d`` the embedding width and ``L`` the example's **own** unpadded length
(``alpha = adv.neftune.alpha``, 5 by default, the paper's; 5 to 15 are typical). The loss
is the task loss at the noisy embeddings; there is no clean pass and no extra pass: one
forward and one backward, the cost of clean training. Evaluation never sees the noise (it
lives only in the training update).

Differences from ``transformers`` (``integrations/neftune.py``,
``neftune_post_forward_hook``): the hook sets ``L * d = output.size(1) * output.size(2)``,
the padded (or packed) batch length, so the noise of short examples in a padded batch is
smaller than the paper's (an open issue, huggingface/transformers#34659); and it adds noise
to padding positions too. Here ``L_i`` counts each example's unpadded tokens and padding
stays clean; on an unpadded batch both agree. The noise follows ``adv.streams`` (each
stream with its own ``L_i`` and ``d``) and ``adv.skip_token_ids``.

Dropout: the one forward pass uses the update's key. Metrics: ``loss`` and ``loss_adv`` are
the noisy loss trained on; there is no clean loss or flip rate (no clean pass).
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from llama_adv.adversarial import geometry
from llama_adv.adversarial.base import (
    NOISE_STREAM,
    BatchInfo,
    Delta,
    Method,
    fail,
    perturbation_norms,
)


def neftune_noise(uniform: Delta, lengths_from: dict, masks: dict, alpha) -> Delta:
    """``U(-1, 1)`` draws ``{stream: [B, L, D]}`` scaled by ``alpha / sqrt(L_i * D)``.

    Args:
      lengths_from: ``{stream: [B, L]}`` padding masks; ``L_i`` is each row's sum.
      masks: ``{stream: [B, L]}`` positions that receive noise (zero elsewhere).
    """
    out = {}
    for k, u in uniform.items():
        length = jnp.sum(lengths_from[k].astype(jnp.float32), axis=1)[:, None, None]
        scale = alpha / jnp.sqrt(jnp.maximum(length * u.shape[-1], 1.0))
        out[k] = u * scale * masks[k][..., None].astype(u.dtype)
    return out


class NEFTune(Method):
    attack_pass = False  # one noisy pass, the loss
    # reads none of the common options: its noise is adv.neftune.alpha's (uses is empty)
    unused_reason = " (its noise is U(-1, 1) * adv.neftune.alpha / sqrt(L_i * d))"
    passes = (1, 1)
    cost = (1, 0, 1)
    defaults: ClassVar[dict[str, Any]] = {"weight_clean": 0.0, "weight_adv": 1.0, "weight_div": 0.0}

    def __init__(self, config, task, num_steps: int = 0):
        super().__init__(config, task, num_steps)
        self.alpha = float(config.neftune.alpha)

    @classmethod
    def validate(cls, config):
        super().validate(config)
        if not config.neftune.alpha >= 0:
            raise fail("neftune.alpha", f"must be >= 0 (noise scale), got {config.neftune.alpha}.")

    def noise(self, rng, info: BatchInfo) -> Delta:
        """This update's noise ``{stream: [B, L, D]}``, zero on padding."""
        keys = jax.random.split(jax.random.fold_in(rng, NOISE_STREAM), len(info.shapes))
        uniform = {
            k: geometry.example_noise(key, s, "uniform", info.rows)
            for key, (k, s) in zip(keys, info.shapes.items(), strict=True)
        }
        return neftune_noise(uniform, info.masks, self.masks(info), self.alpha)

    def grads(self, objective, params, info: BatchInfo, rng, state):
        delta = self.noise(rng, info)

        def loss_fn(p):
            per_example, _ = objective(p, delta, self.rng_at(rng, 0))
            return info.local_mean(per_example)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        loss = info.psum(loss)
        norms = perturbation_norms(delta, "l2")
        zero = jnp.zeros((), jnp.float32)
        metrics = {
            "loss": loss,
            "loss_adv": loss,
            "loss_div": zero,
            "perturbation_norm": info.global_example_mean(norms),
            "perturbation_norm_max": info.global_max(norms),
        }
        return grads, metrics, state
