"""``fgsm``: one L-inf sign step of size ``eps`` (Goodfellow et al.), optionally from a
random start (FGSM-RS, Wong et al. 2020: ``U(-eps, eps)`` start, step ``1.25 eps``, clip).

Loss ``(1 - w) L(x) + w L(x + delta)``: ``adv.weight_clean`` and ``adv.weight_adv``
default to 0.5 each. Without a random start the clean backward yields both the parameter
gradient and the step direction (2 forward, 2 backward passes); with it, the direction
costs one more forward and an input-only backward.

Dropout: ``fresh`` by default (a new mask per forward pass: separate train-mode calls
in Wong et al.'s FGSM-RS code).
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax

from llama_adv.adversarial import ascent
from llama_adv.adversarial.base import NOISE_STREAM, BatchInfo
from llama_adv.adversarial.methods.fgm import FGM


class FGSM(FGM):
    # the random start (adv.fgsm.random_start) reads init, step_size and projection
    uses = FGM.uses | {"init", "step_size", "projection"}
    passes = (2, 2)
    cost = (2, 0, 2)
    defaults: ClassVar[dict[str, Any]] = {
        "weight_clean": 0.5,
        "weight_adv": 0.5,
        "norm": "linf",
        "linf_step": "sign",
        "init": "uniform",
    }

    def __init__(self, config, task, num_steps: int = 0):
        super().__init__(config, task, num_steps)
        self.random_start = bool(config.fgsm.random_start)
        if self.random_start:
            self.passes, self.cost = (3, 3), (3, 1, 2)

    def attack(self, objective, params, info: BatchInfo, rng, radius, clean_out=None):
        if not self.random_start:
            return super().attack(objective, params, info, rng, radius, clean_out)
        o, masks = self.opt, self.masks(info)
        start = ascent.init(
            jax.random.fold_in(rng, NOISE_STREAM),
            masks,
            info.shapes,
            o,
            radius,
            radius,
            rows=info.rows,
        )
        inner = self.inner_loss(objective, params, info, clean_out, o.inner)
        g = ascent.grad(inner, start, self.attack_rng(rng, 2))
        step = self.step_size(radius, info) if self.opt.step_size > 0 else 1.25 * radius
        return ascent.stop(ascent.step(start, g, masks, o, step, radius))

    def grads_at(self, objective, params, info: BatchInfo, rng, radius):
        if not self.random_start:
            return super().grads_at(objective, params, info, rng, radius)
        clean_out, pullback = self.clean_forward(objective, params, self.rng_at(rng, 0))
        delta = self.attack(objective, params, info, rng, radius, clean_out)
        grads, terms, adv_out, _ = self.descent_grads(
            objective, params, delta, info, self.rng_at(rng, 1), clean_out, pullback
        )
        return grads, self.metrics(info, terms, delta, clean_out, adv_out), clean_out, adv_out
